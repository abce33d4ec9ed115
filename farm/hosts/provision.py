"""The lab operations behind `farm lab ...`: check the inventory, provision,
collect facts into the host registry, fetch crash remains, tear down."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from farm.config import REPO, state_dir
from farm.errors import EXIT_BAD_INPUT, EXIT_INFRA, EXIT_PASS, TOOL_OUTPUT_CHARS, InfraError
from farm.hosts.ansible import PlaybookRun, run_playbook
from farm.hosts.hostfacts import facts_from_raw
from farm.hosts.inventory import check_inventory

REPRODUCIBLE_EPOCH = "315532800"  # same sources, same wheel bytes: provision stays idempotent


def wheelhouse(progress=print) -> Path:
    """farm and its dependencies as wheels, for hosts that have no PyPI."""
    out = state_dir() / "ansible" / "wheels"
    out.mkdir(parents=True, exist_ok=True)
    progress(f"controller: building the wheelhouse in {out}")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                        "-w", str(out), str(REPO)], capture_output=True, text=True,
                       env={**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH})
    if p.returncode != 0:
        raise InfraError(f"cannot build farm's wheelhouse: {p.stderr.strip()[-TOOL_OUTPUT_CHARS:]}")
    return out


def _finish(run: PlaybookRun, progress) -> int:
    for line in run.summary():
        progress(line)
    if run.unreachable or run.failed:
        progress(f"{run.playbook}: unreachable {', '.join(run.unreachable) or '-'}; "
                 f"failed {', '.join(run.failed) or '-'}")
        return EXIT_INFRA
    return EXIT_PASS


def provision(inventory: Path, limit: str | None = None, progress=print) -> tuple[int, PlaybookRun]:
    check_inventory(inventory)
    run = run_playbook("provision.yml", inventory, limit, {"farm_wheels": str(wheelhouse(progress))}, progress)
    return _finish(run, progress), run


def teardown(inventory: Path, limit: str | None = None, progress=print) -> tuple[int, PlaybookRun]:
    check_inventory(inventory)
    run = run_playbook("teardown.yml", inventory, limit, progress=progress)
    return _finish(run, progress), run


def collect_facts(inventory: Path, limit: str | None = None, registry=None, progress=print) -> tuple[int, dict]:
    """Facts of every reachable host; stored in the registry when given, so
    routing knows a host before its worker starts."""
    from farm.queue.routing import queues_for
    check_inventory(inventory)
    run = run_playbook("facts.yml", inventory, limit, progress=progress)
    found = {}
    for host, text in run.printed.items():
        facts, extras = facts_from_raw(text)
        found[host] = {**facts.to_dict(), **extras}
        if registry is not None:
            registry.register(facts.hostname, facts.host_json(), queues_for(facts.host_json()))
    return _finish(run, progress), found


def collect_crash(inventory: Path, host: str, progress=print) -> tuple[int, Path]:
    check_inventory(inventory)
    dest = state_dir() / "artifacts" / "crash"
    run = run_playbook("collect-crash.yml", inventory, host, {"farm_artifacts": str(dest)}, progress)
    if host not in run.hosts:
        progress(f"{host}: not in the inventory")
        return EXIT_BAD_INPUT, dest
    return _finish(run, progress), dest / host / "crash.tgz"
