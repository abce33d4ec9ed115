"""The report outbox: one row per (report id, channel) of every report
farm composed for a new signature or a confirmed regression, with its
delivery state (pending, sent, suppressed), attempts, last error and next
try. Nothing is rewritten in older tables; a database of an earlier
revision simply has no reports yet.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_try", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["signature_id"], ["signatures.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id", "channel"),
    )
    with op.batch_alter_table("report_outbox") as batch_op:
        batch_op.create_index("ix_report_outbox_due", ["state", "next_try"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("report_outbox") as batch_op:
        batch_op.drop_index("ix_report_outbox_due")
    op.drop_table("report_outbox")
