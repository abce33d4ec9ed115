"""The lab inventory (Ansible YAML): what `farm lab check-inventory` checks
before any playbook runs."""
from __future__ import annotations

from pathlib import Path

import yaml

from farm.errors import BadInput

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


class _UniqueKeys(yaml.SafeLoader):
    """safe_load, but a key twice in one mapping is an error, not a silent win."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise BadInput(f"line {key_node.start_mark.line + 1}: {key!r} appears twice in one mapping")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_inventory(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader subclass)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such inventory") from None
    except BadInput as e:
        raise BadInput(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("all"), dict):
        raise BadInput(f"{path}: an inventory starts with 'all:'")
    return data


def hosts_by_group(data: dict) -> tuple[dict[str, set[str]], dict[str, list[dict]]]:
    """group -> host names (children included), host -> every vars mapping given for it."""
    groups: dict[str, set[str]] = {}
    host_vars: dict[str, list[dict]] = {}

    def walk(name: str, group: dict, where: str) -> set[str]:
        if group is None:
            group = {}
        if not isinstance(group, dict):
            raise BadInput(f"{where}: a group is a mapping (hosts, vars, children)")
        unknown = set(group) - {"hosts", "vars", "children"}
        if unknown:
            raise BadInput(f"{where}.{sorted(unknown)[0]}: unknown key (a group has hosts, vars, children)")
        members: set[str] = set()
        for host, hv in (group.get("hosts") or {}).items():
            if hv is not None and not isinstance(hv, dict):
                raise BadInput(f"{where}.hosts.{host}: host vars are a mapping")
            host_vars.setdefault(str(host), []).append(hv or {})
            members.add(str(host))
        _check_vars(group.get("vars") or {}, f"{where}.vars")
        for child, cg in (group.get("children") or {}).items():
            members |= walk(str(child), cg, f"{where}.children.{child}")
        groups[name] = groups.get(name, set()) | members
        return members

    walk("all", data["all"], "all")
    return groups, host_vars


def _check_vars(v: dict, where: str) -> None:
    if not isinstance(v, dict):
        raise BadInput(f"{where}: vars are a mapping")
    for key in v:
        if str(key).startswith("farm_") and key not in FARM_VARS:
            raise BadInput(f"{where}.{key}: unknown farm var (known: {', '.join(sorted(FARM_VARS))})")
    if "farm_queues" in v and not (isinstance(v["farm_queues"], list)
                                   and all(isinstance(q, str) and q for q in v["farm_queues"])):
        raise BadInput(f"{where}.farm_queues: a list of queue names")


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
