"""The lab inventory (Ansible YAML): what `farm lab check-inventory` checks
before any playbook runs."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from farm.errors import BadInput, shown
from farm.inputs import load_yaml, read_input
from farm.spec import HOST

VENDOR_GROUPS = ("intel", "amd")
FARM_VARS = {
    "farm_broker_url": "the controller's broker, written into the worker's config",
    "farm_queues": "extra queues the worker serves",
    "farm_notes": "free text for operators",
    "farm_root": "where farm is installed (default /opt/farm)",
    "farm_hostname": "the name the worker registers under (default: the host's)",
    "farm_worker": "start a farm worker (default true)",
    "farm_crash_capture": "pstore and kernel.panic_on_oops (default false)",
    "farm_fstab": "the fstab that gets the bpffs line (default /etc/fstab)",
    "farm_sysctl_file": "the sysctl.d file farm writes (default /etc/sysctl.d/60-farm.conf)",
}
# Host names become directories (collect-crash.yml fetches into <artifacts>/<host>/);
# farm_* values are written into shell and env lines by provision.yml.
NAME = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:\[\]-]{0,252}")  # hosts (ranges, IPv6 too) and groups
_QUEUE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:*-]{0,199}")
_PLAIN = re.compile(r"[^\s'\"\\`$;|&<>]+")  # nothing a shell would split, quote or expand
_ABS_PATH = re.compile(r"/[^\s'\"\\`$;|&<>]*")
FARM_VAR_RULES = {  # var -> (accepts, what it must be)
    "farm_broker_url": (lambda v: isinstance(v, str) and _PLAIN.fullmatch(v), "a URL like redis://host:6379/0"),
    "farm_queues": (lambda v: isinstance(v, list) and all(isinstance(q, str) and _QUEUE.fullmatch(q) for q in v),
                    "a list of queue names"),
    "farm_notes": (lambda v: isinstance(v, (str, int, float)), "text"),
    "farm_root": (lambda v: isinstance(v, str) and _ABS_PATH.fullmatch(v), "an absolute path, no spaces or quotes"),
    "farm_hostname": (lambda v: isinstance(v, str) and HOST.fullmatch(v),
                      "a host name (letters, digits, '.', '_', '-')"),
    "farm_worker": (lambda v: isinstance(v, bool), "true or false"),
    "farm_crash_capture": (lambda v: isinstance(v, bool), "true or false"),
    "farm_fstab": (lambda v: isinstance(v, str) and _ABS_PATH.fullmatch(v), "an absolute path, no spaces or quotes"),
    "farm_sysctl_file": (lambda v: isinstance(v, str) and _ABS_PATH.fullmatch(v),
                         "an absolute path, no spaces or quotes"),
}
MAX_GROUP_VISITS = 10_000  # aliases can repeat a group exponentially often


class _UniqueKeys(yaml.SafeLoader):
    """safe_load, but a key twice in one mapping is an error, not a silent win."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # construct_mapping says "found unhashable key"
        if key in seen:
            raise BadInput(f"line {key_node.start_mark.line + 1}: {key!r} appears twice in one mapping")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_inventory(path: str | Path) -> dict:
    path = Path(path)
    data = load_yaml(read_input(path, "inventory"), str(path),
                     lambda text: yaml.load(text, Loader=_UniqueKeys))  # noqa: S506 (a SafeLoader subclass)
    if not isinstance(data, dict) or not isinstance(data.get("all"), dict):
        raise BadInput(f"{path}: an inventory starts with 'all:'")
    return data


def hosts_by_group(data: dict) -> tuple[dict[str, set[str]], dict[str, list[dict]]]:
    """group -> host names (children included), host -> every vars mapping given for it."""
    groups: dict[str, set[str]] = {}
    host_vars: dict[str, list[dict]] = {}
    visits = 0

    def walk(name: str, group: dict, where: str) -> set[str]:
        nonlocal visits
        visits += 1
        if visits > MAX_GROUP_VISITS:
            raise BadInput(f"{where}: more than {MAX_GROUP_VISITS} groups (aliases repeating groups?)")
        if group is None:
            group = {}
        if not isinstance(group, dict):
            raise BadInput(f"{where}: a group is a mapping (hosts, vars, children)")
        unknown = set(group) - {"hosts", "vars", "children"}
        if unknown:
            raise BadInput(f"{where}.{_key(sorted(map(str, unknown))[0])}: unknown key "
                           "(a group has hosts, vars, children)")
        members: set[str] = set()
        for host, hv in _names(group, "hosts", where):
            if hv is not None and not isinstance(hv, dict):
                raise BadInput(f"{where}.hosts.{host}: host vars are a mapping")
            host_vars.setdefault(host, []).append(hv or {})
            members.add(host)
        _check_vars(group.get("vars") or {}, f"{where}.vars")
        for child, cg in _names(group, "children", where):
            members |= walk(child, cg, f"{where}.children.{child}")
        groups[name] = groups.get(name, set()) | members
        return members

    walk("all", data["all"], "all")
    return groups, host_vars


def _key(key) -> str:
    """A YAML key for an error message's field path."""
    return key if isinstance(key, str) and len(key) <= 60 else shown(key)


def _names(group: dict, what: str, where: str) -> list[tuple[str, object]]:
    """A group's hosts or children: a mapping of names, each one usable as a directory name."""
    items = group.get(what) or {}
    if not isinstance(items, dict):
        raise BadInput(f"{where}.{what}: a mapping of names (name: followed by its vars or nothing)")
    for name in items:
        if not NAME.fullmatch(str(name)):
            raise BadInput(f"{where}.{what}.{_key(name)}: not a name "
                           "(letters, digits, '.', '_', '-', ':', '[', ']', not starting with a symbol)")
    return [(str(name), value) for name, value in items.items()]


def _check_vars(v: dict, where: str) -> None:
    if not isinstance(v, dict):
        raise BadInput(f"{where}: vars are a mapping")
    for key in v:
        if str(key).startswith("farm_") and key not in FARM_VARS:
            raise BadInput(f"{where}.{_key(key)}: unknown farm var (known: {', '.join(sorted(FARM_VARS))})")
    for key, (accepts, what) in FARM_VAR_RULES.items():
        if key in v and not accepts(v[key]):
            raise BadInput(f"{where}.{key}: {what}")


def check_inventory(path: str | Path) -> dict[str, str]:
    """Validate; returns host -> vendor group. Raises BadInput with one line."""
    data = load_inventory(path)
    try:
        groups, host_vars = hosts_by_group(data)
    except BadInput as e:
        raise BadInput(f"{path}: {e}") from None
    vendor: dict[str, str] = {}
    for host, defs in sorted(host_vars.items()):
        if len([d for d in defs if d]) > 1:
            raise BadInput(f"{path}: host {host} is defined more than once with vars")
        for d in defs:
            try:
                _check_vars(d, f"hosts.{host}")
            except BadInput as e:
                raise BadInput(f"{path}: {e}") from None
        both = [g for g in VENDOR_GROUPS if host in groups.get(g, set())]
        if len(both) > 1:
            raise BadInput(f"{path}: host {host} is in both the intel and the amd group")
        vendor[host] = both[0] if both else ""
    return vendor
