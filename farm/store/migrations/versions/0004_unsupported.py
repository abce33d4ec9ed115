"""What each run's kernel could not run at all (result schema 3's
`unsupported`): a row per (run, topology or refuse check, the kernel's own
reason), and the outcome "not-run" for a run whose only trouble that was.

Runs stored before this revision keep no rows: a result of schema 1 or 2
has no `unsupported`, so they read as none. A schema-3 result stored by the
revision before (its outcome "error") is read back from its kept result
JSON: only runs that did not pass can name anything unsupported (a pass
needs every topology to have run), so the passing bulk of a lab's history
is never unpacked. The not-run rule is frozen here as 0004 applies it;
farm.store.ingest.not_run is the live one.

Revision ID: 0004
Revises: 0003
"""
import json
import zlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TOPOLOGY_LEN = 255


def _entries(result: dict) -> list[tuple[str, str]]:
    out = []
    for u in result.get("unsupported") or ():
        if isinstance(u, dict) and isinstance(u.get("topology"), str) and u["topology"]:
            out.append((u["topology"][:TOPOLOGY_LEN], str(u.get("reason") or "")))
    return out


def _not_run(result: dict, entries: list[tuple[str, str]]) -> bool:
    said = "unsupported here: " + "; ".join(f"{t} ({r})" for t, r in entries)
    return bool(entries) and result.get("verdict") == "error" and not result.get("findings") \
        and result.get("error") == said


def upgrade() -> None:
    op.create_table(
        "unsupported",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("topology", sa.String(length=TOPOLOGY_LEN), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("unsupported") as batch_op:
        batch_op.create_index("ix_unsupported_run_id", ["run_id"], unique=False)
    conn = op.get_bind()
    runs = sa.table("runs", sa.column("run_id", sa.String), sa.column("outcome", sa.String),
                    sa.column("result", sa.LargeBinary))
    unsupported = sa.table("unsupported", sa.column("run_id", sa.String), sa.column("topology", sa.String),
                           sa.column("reason", sa.Text))
    rows, not_run = [], []
    for run_id, outcome, blob in conn.execute(
            sa.select(runs.c.run_id, runs.c.outcome, runs.c.result)
            .where(runs.c.outcome != "pass", runs.c.result.is_not(None))):
        try:
            result = json.loads(zlib.decompress(blob))
        except (zlib.error, ValueError):
            continue
        if not isinstance(result, dict):
            continue
        entries = _entries(result)
        rows += [dict(run_id=run_id, topology=t, reason=r) for t, r in entries]
        if outcome == "error" and _not_run(result, entries):
            not_run.append(run_id)
    if rows:
        conn.execute(sa.insert(unsupported), rows)
    for i in range(0, len(not_run), 500):
        conn.execute(sa.update(runs).where(runs.c.run_id.in_(not_run[i:i + 500])).values(outcome="not-run"))


def downgrade() -> None:
    runs = sa.table("runs", sa.column("outcome", sa.String))
    op.get_bind().execute(sa.update(runs).where(runs.c.outcome == "not-run").values(outcome="error"))
    with op.batch_alter_table("unsupported") as batch_op:
        batch_op.drop_index("ix_unsupported_run_id")
    op.drop_table("unsupported")
