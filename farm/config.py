"""Where the farm keeps its state and finds its broker.

FARM_STATE_DIR (default /var/lib/farm) holds collected results and the beat
schedule; FARM_BROKER_URL (default redis://127.0.0.1:6379/0) names Redis.
A config file (FARM_CONFIG, default <state>/config.yaml) may set broker_url.
"""
from __future__ import annotations

import os
from pathlib import Path

from farm.errors import BadInput
from farm.inputs import load_yaml, read_input

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
# the checkout farm runs from: guests mount it, Ansible copies it to hosts
REPO = Path(__file__).resolve().parent.parent
PLAYBOOKS = REPO / "playbooks"


def state_dir() -> Path:
    d = Path(os.environ.get("FARM_STATE_DIR", "/var/lib/farm"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _config() -> dict:
    path = Path(os.environ.get("FARM_CONFIG") or state_dir() / "config.yaml")
    if not path.exists():
        return {}
    data = load_yaml(read_input(path, "farm config"), str(path)) or {}
    if not isinstance(data, dict):
        raise BadInput(f"{path}: the farm config is a YAML mapping")
    return data


def broker_url() -> str:
    return os.environ.get("FARM_BROKER_URL") or _config().get("broker_url") or DEFAULT_BROKER


def allow_custom_programs() -> bool:
    """Whether this host's worker runs jobs that bring their own BPF source
    (`allow_custom_programs: true` in its config); off unless said."""
    value = _config().get("allow_custom_programs", False)
    if not isinstance(value, bool):
        raise BadInput("allow_custom_programs in the farm config is true or false")
    return value
