"""Runs carry their mitigation cell (host.cell of the result) and the JIT
paths it reached, so triage can split job x hw_class x kernel by cell.

Runs stored before cells existed keep "" (unknown): nothing in them says
which boot arguments the host had, so they are never guessed as "default".
The (job, hw_class, kernel) index grows the cell: regressions are a series
per cell now, and the old index's name ("cell") meant a matrix entry.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CELL_COLUMNS = ("cell", "indirect_jump", "return_path")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        for name in CELL_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(length=32), nullable=False, server_default=""))
        batch_op.drop_index("ix_runs_cell")
        batch_op.create_index("ix_runs_series", ["job", "hw_class", "kernel", "cell"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("ix_runs_series")
        batch_op.create_index("ix_runs_cell", ["job", "hw_class", "kernel"], unique=False)
        for name in reversed(CELL_COLUMNS):
            batch_op.drop_column(name)
