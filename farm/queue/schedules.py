"""Scheduled lab-wide runs: jobs/schedules.yaml into Celery beat.

    schedules:
      - name: nightly-smoke
        job: smoke.yaml            # relative to the schedules file
        targets: {all: true}       # or {where: "vendor=amd", hosts: [a, b]}
        cron: "0 3 * * *"          # or every: 6h
        bisect_regressions:        # optional: bisect each confirmed regression of this job once
          cpu_models: [EPYC-Milan] # guests each step runs on (default EPYC-Milan)
          repeat: 3                # calibration runs of the bad end (default 3)
          good: deb:PACKAGE        # optional: a fixed good end (default: the regression's previous kernel)

Beat sends farm.tick to the collector, which fans out. Each tick has a slot
(the scheduled minute, or the interval number) and fans out only once per
slot, so a beat restart that fires the same tick again changes nothing.
"""
from __future__ import annotations

import time
from pathlib import Path

from celery.schedules import ParseException, crontab

from farm.errors import EXIT_PASS, BadInput, shown
from farm.inputs import load_yaml, read_input
from farm.queue.registry import Registry
from farm.queue.routing import CONTROL_QUEUE, Selection, parse_where
from farm.queue.submit import submit
from farm.spec import HOST, NAME, NAME_RULE, load_spec_text, parse_duration


def load_schedules(path: str | Path) -> list[dict]:
    """Validated entries, each with the job's text read in."""
    path = Path(path)
    data = load_yaml(read_input(path, "schedules file"), str(path))
    if not isinstance(data, dict) or not isinstance(data.get("schedules"), list):
        raise BadInput(f"{path}: expected a mapping with a 'schedules' list")
    entries, names = [], set()
    for i, e in enumerate(data["schedules"]):
        where = f"{path}: schedules[{i}]"
        if not isinstance(e, dict):
            raise BadInput(f"{where}: an entry is a mapping (name, job, targets, cron or every)")
        unknown = set(e) - {"name", "job", "targets", "cron", "every", "bisect_regressions"}
        if unknown:
            raise BadInput(f"{where}.{sorted(map(str, unknown))[0]}: unknown key")
        name = e.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise BadInput(f"{where}.name: a unique name is required")
        if not NAME.fullmatch(name):  # it becomes the submission id, so result and artifact paths
            raise BadInput(f"{where}.name: {NAME_RULE}")
        names.add(name)
        if ("cron" in e) == ("every" in e):
            raise BadInput(f"{where}: give exactly one of cron or every")
        try:
            if "every" in e:
                parse_duration(e["every"])
            else:
                _crontab(e["cron"])
        except (ValueError, ParseException) as err:
            raise BadInput(f"{where}.{'every' if 'every' in e else 'cron'}: {err}") from None
        job = e.get("job")
        if not isinstance(job, str) or not job or Path(job).is_absolute() or ".." in Path(job).parts:
            raise BadInput(f"{where}.job: a job file in {path.parent} (a relative path, no '..')")
        job_path = path.parent / job
        if not job_path.is_file():
            raise BadInput(f"{where}.job: no such job file {job_path}")
        try:
            text = job_path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise BadInput(f"{where}.job: cannot read {job_path}: {err}") from None
        load_spec_text(text, str(job_path), job_path.stem, elsewhere=True)  # fail now, not at 3 am
        targets = e.get("targets") or {"all": True}
        if not isinstance(targets, dict) or set(targets) - {"all", "where", "hosts"}:
            raise BadInput(f"{where}.targets: use all, where and hosts")
        if not isinstance(targets.get("all", False), bool):
            raise BadInput(f"{where}.targets.all: true or false")
        hosts = targets.get("hosts") or []
        if not isinstance(hosts, list) or not all(isinstance(h, str) and HOST.fullmatch(h) for h in hosts):
            raise BadInput(f"{where}.targets.hosts: a list of host names")
        if not isinstance(targets.get("where", ""), str):
            raise BadInput(f"{where}.targets.where: facts like vendor=amd,hw_class=amd-zen*")
        try:
            parse_where(targets.get("where", ""))
        except ValueError as err:
            raise BadInput(f"{where}.targets.where: {err}") from None
        entry = {"name": name, "job": job_path.stem, "spec": text, "targets": targets,
                 "cron": e.get("cron"), "every": e.get("every")}
        if "bisect_regressions" in e:
            entry["bisect_regressions"] = bisect_policy(e["bisect_regressions"], f"{where}.bisect_regressions")
        entries.append(entry)
    return entries


def bisect_policy(value, where: str) -> dict:
    """bisect_regressions: true, or {cpu_models, repeat, good, cell}, validated."""
    from farm.bisect.kernels import package_of
    from farm.bisect.search import MAX_RUNS
    from farm.guests.matrix import CPU_MODEL
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise BadInput(f"{where}: true, or a mapping of cpu_models, repeat, good and cell")
    unknown = set(value) - {"cpu_models", "repeat", "good", "cell"}
    if unknown:
        raise BadInput(f"{where}.{sorted(map(str, unknown))[0]}: unknown key (cpu_models, repeat, good, cell)")
    models = value.get("cpu_models", ["EPYC-Milan"])
    if not isinstance(models, list) or not models or \
            not all(isinstance(m, str) and CPU_MODEL.fullmatch(m) for m in models):
        raise BadInput(f"{where}.cpu_models: a list of QEMU CPU models, e.g. [EPYC-Milan]")
    repeat = value.get("repeat", 3)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_RUNS:
        raise BadInput(f"{where}.repeat: {shown(repeat)} (a whole number, 1 to {MAX_RUNS})")
    good = value.get("good")
    if good is not None:
        if not isinstance(good, str):
            raise BadInput(f"{where}.good: deb:PACKAGE")
        try:
            package_of(good, "good")
        except BadInput as err:
            raise BadInput(f"{where}.{err}") from None
    cell = value.get("cell")
    if cell is not None:
        from farm.cells import get_cell
        if not isinstance(cell, str):
            raise BadInput(f"{where}.cell: a cell of jobs/cells.yaml")
        try:
            get_cell(cell)
        except BadInput as err:
            raise BadInput(f"{where}.cell: {err}") from None
    return {"cpu_models": list(dict.fromkeys(models)), "repeat": repeat, "good": good, "cell": cell}


def _crontab(expr) -> crontab:
    parts = expr.split() if isinstance(expr, str) else []
    if len(parts) != 5:
        raise ValueError(f"{shown(expr)} is not a 5-field cron expression")
    minute, hour, day_of_month, month, day_of_week = parts  # crontab(5)'s order, not celery's
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                   day_of_week=day_of_week)


def beat_schedule(entries: list[dict]) -> dict:
    return {e["name"]: {"task": "farm.tick",
                        "schedule": parse_duration(e["every"]) if e["every"] else _crontab(e["cron"]),
                        "args": [e, 0.0], "options": {"queue": CONTROL_QUEUE}} for e in entries}


def tick_slot(entry: dict, now: float) -> int:
    """The tick this moment belongs to: interval number, or the minute."""
    period = parse_duration(entry["every"]) if entry.get("every") else 60
    return int(now // period)


def fire(app, reg: Registry, entry: dict, scheduled_for: float) -> str | None:
    """Fan the entry out once for its current tick; the submission id, or
    None when this tick already fanned out."""
    slot = tick_slot(entry, scheduled_for or time.time())
    sub_id = f"sched-{entry['name']}-{slot}"
    if entry.get("bisect_regressions"):  # what the collector bisects this job's regressions with
        reg.set_bisect_policy(entry["job"], {**entry["bisect_regressions"], "spec": entry["spec"]})
    if not reg.claim_tick(entry["name"], slot, sub_id):
        return None
    t = entry["targets"]
    sel = Selection(parse_where(t.get("where", "")), tuple(t.get("hosts") or ()), bool(t.get("all")))
    spec = load_spec_text(entry["spec"], entry["name"], entry["job"], elsewhere=True)
    try:
        submit(app, reg, spec, entry["spec"], sel, sub_id=sub_id)
    except BadInput as e:
        print(f"farm: schedule {entry['name']}: {e}", flush=True)
        return None
    return sub_id


def run_beat(path: str | Path, state: Path) -> int:
    from farm.queue.app import app
    entries = load_schedules(path)
    app.conf.beat_schedule = beat_schedule(entries)
    print(f"farm beat: {len(entries)} schedules from {path}", flush=True)
    app.Beat(schedule=str(state / "beat-schedule"), max_interval=1, loglevel="WARNING").run()
    return EXIT_PASS
