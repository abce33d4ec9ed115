"""Hosts, facts snapshots, submissions, runs, findings and signatures.

Revision ID: 0001
Revises: 
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hosts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('vendor', sa.String(length=32), nullable=False),
    sa.Column('hw_class', sa.String(length=64), nullable=False),
    sa.Column('first_seen', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('hostname')
    )
    op.create_table('signatures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('text', sa.String(length=512), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('first_seen', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('text')
    )
    op.create_table('submissions',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('job', sa.String(length=255), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('facts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('vendor', sa.String(length=32), nullable=False),
    sa.Column('family', sa.Integer(), nullable=True),
    sa.Column('model', sa.Integer(), nullable=True),
    sa.Column('stepping', sa.Integer(), nullable=True),
    sa.Column('model_name', sa.String(length=255), nullable=False),
    sa.Column('microcode', sa.String(length=64), nullable=False),
    sa.Column('kernel', sa.String(length=255), nullable=False),
    sa.Column('spectre_v2', sa.Text(), nullable=False),
    sa.Column('hw_class', sa.String(length=64), nullable=False),
    sa.Column('first_seen', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('host_id', 'digest')
    )
    with op.batch_alter_table('facts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_facts_host_id'), ['host_id'], unique=False)

    op.create_table('runs',
    sa.Column('run_id', sa.String(length=255), nullable=False),
    sa.Column('submission_id', sa.String(length=255), nullable=True),
    sa.Column('job', sa.String(length=255), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('facts_id', sa.Integer(), nullable=False),
    sa.Column('vendor', sa.String(length=32), nullable=False),
    sa.Column('hw_class', sa.String(length=64), nullable=False),
    sa.Column('kernel', sa.String(length=255), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('started', sa.DateTime(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('updates_per_s', sa.Float(), nullable=False),
    sa.Column('tail_calls_per_s', sa.Float(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['facts_id'], ['facts.id'], ),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ),
    sa.PrimaryKeyConstraint('run_id')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_cell', ['job', 'hw_class', 'kernel'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_started'), ['started'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_submission_id'), ['submission_id'], unique=False)

    op.create_table('findings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=255), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('cpu', sa.Integer(), nullable=True),
    sa.Column('at', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], ),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_findings_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_findings_signature_id'), ['signature_id'], unique=False)


def downgrade() -> None:
    for table in ("findings", "runs", "facts", "submissions", "signatures", "hosts"):
        op.drop_table(table)
