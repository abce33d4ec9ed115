"""The results database (SQLite in the state dir, or FARM_DB_URL)."""
from farm.store.store import Store, open_store

__all__ = ["Store", "open_store"]
