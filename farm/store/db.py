"""Opening the results database: a SQLite file in the state dir unless
FARM_DB_URL names another (postgresql+psycopg://user@host:port/db), brought
to the newest schema with Alembic on open so an upgraded farm keeps its
history."""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError

from farm.config import state_dir
from farm.errors import BadInput, InfraError

MIGRATIONS = Path(__file__).parent / "migrations"


def db_url() -> str:
    return os.environ.get("FARM_DB_URL") or f"sqlite:///{state_dir() / 'farm.db'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: `farm triage` reads while the collector writes; NORMAL is durable
    # across a process crash, which is what a collector meets.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str | None = None) -> Engine:
    url = url or db_url()
    try:
        engine = create_engine(url, future=True, pool_pre_ping=True)
    except (ArgumentError, ImportError) as e:
        raise BadInput(f"database URL {url!r}: {e}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _alembic_config(connection):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (idempotent)."""
    from alembic import command
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), revision)
    except OperationalError as e:
        raise InfraError(f"database {engine.url.render_as_string(hide_password=True)}: "
                         f"{e.orig}") from None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
