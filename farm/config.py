"""Where the farm keeps its state and finds its broker.

FARM_STATE_DIR (default /var/lib/farm) holds collected results, the beat
schedule and the virtual lab's kernel cache; FARM_BROKER_URL (default
redis://127.0.0.1:6379/0) names Redis; FARM_KERNEL_CACHE_MAX (default 4G)
caps the kernel cache. A config file (FARM_CONFIG, default
<state>/config.yaml) may set broker_url and kernel_cache_max, and `reports:`,
where reports of new signatures and regressions are delivered (docs/reports.md;
farm/notify/settings.py checks it).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from farm.errors import BadInput
from farm.inputs import load_yaml, read_input

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_KERNEL_CACHE_MAX = "4G"
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
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


ALLOW_CRASHES_ENV = "FARM_ALLOW_CRASHES"  # set to 1 in every guest of the virtual lab


def allow_crashes() -> bool:
    """Whether this host may run jobs that can crash an unfixed kernel: a
    disposable host (`allow_crashes: true` in its config), or a guest of the
    virtual lab (FARM_ALLOW_CRASHES=1 in its environment); off unless said."""
    env = os.environ.get(ALLOW_CRASHES_ENV)
    if env is not None:
        if env not in ("0", "1"):
            raise BadInput(f"{ALLOW_CRASHES_ENV} is 0 or 1, not {env!r}")
        return env == "1"
    value = _config().get("allow_crashes", False)
    if not isinstance(value, bool):
        raise BadInput("allow_crashes in the farm config is true or false")
    return value


def reports_section() -> dict:
    """The config's `reports:` mapping (SMTP and/or webhook delivery of
    reports, docs/reports.md), {} when absent; farm.notify.settings checks
    its keys."""
    value = _config().get("reports")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput("reports in the farm config is a mapping (smtp:, webhook:)")
    return value


def parse_size(text: str, what: str) -> int:
    """"4G", "4GiB", "500M", "1.5g", "0" or plain bytes -> bytes (units are binary)."""
    m = _SIZE.fullmatch(str(text).strip())
    if not m:
        raise BadInput(f"{what}: {text!r} is not a size (use e.g. 4G, 500M, 0)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def kernel_cache_max() -> int:
    """The most the virtual lab's kernel cache may hold, in bytes:
    FARM_KERNEL_CACHE_MAX, else kernel_cache_max in the config, else 4G."""
    if os.environ.get("FARM_KERNEL_CACHE_MAX") is not None:
        return parse_size(os.environ["FARM_KERNEL_CACHE_MAX"], "FARM_KERNEL_CACHE_MAX")
    return parse_size(_config().get("kernel_cache_max", DEFAULT_KERNEL_CACHE_MAX), "kernel_cache_max in the farm config")


def pid_alive(pid: int) -> bool:
    """Whether a process of that pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
