"""Bisections (farm bisect): the packaged kernel where a job's failure was
introduced or fixed, with its boundary, confidence, suspects and the whole
answer JSON; `regression` (unique) marks a regression the collector had
bisected, so it is never bisected twice.

Nothing before this revision holds a bisection: the table starts empty.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bisections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job", sa.String(length=255), nullable=False),
        sa.Column("signature", sa.String(length=512), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("good", sa.String(length=255), nullable=False),
        sa.Column("bad", sa.String(length=255), nullable=False),
        sa.Column("boundary_older", sa.String(length=255), nullable=True),
        sa.Column("boundary_newer", sa.String(length=255), nullable=True),
        sa.Column("upstream_older", sa.String(length=64), nullable=True),
        sa.Column("upstream_newer", sa.String(length=64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("top_suspect", sa.Text(), nullable=True),
        sa.Column("suspects", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("refused", sa.Text(), nullable=True),
        sa.Column("regression", sa.String(length=512), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("answer", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("regression"),
    )
    with op.batch_alter_table("bisections") as batch_op:
        batch_op.create_index("ix_bisections_job", ["job"], unique=False)
        batch_op.create_index("ix_bisections_signature", ["signature"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bisections") as batch_op:
        batch_op.drop_index("ix_bisections_signature")
        batch_op.drop_index("ix_bisections_job")
    op.drop_table("bisections")
