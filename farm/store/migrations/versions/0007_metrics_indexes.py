"""Indexes for /metrics (farm/web/metrics.py), which a Prometheus server
scrapes every few seconds: runs counted by verdict and findings by kind
are index-only counts, and a class's newest measured runs are read from
(hw_class, started) instead of a scan of every run. No data changes.

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = (("runs", "ix_runs_verdict", ["verdict"]),
           ("runs", "ix_runs_class_started", ["hw_class", "started"]),
           ("findings", "ix_findings_kind", ["kind"]))


def upgrade() -> None:
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _ in reversed(INDEXES):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_index(name)
