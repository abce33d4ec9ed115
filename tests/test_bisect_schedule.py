"""Bisecting confirmed regressions by themselves: the schedule option
(bisect_regressions) and its one-line errors, the policy a tick leaves in
Redis, the collector's once-per-regression rule on a real Redis and a real
database (a restarted collector too), and the task's body with a faked lab."""
from __future__ import annotations

import functools
from datetime import datetime

import pytest
import yaml

from farm.errors import BadInput
from support.results_lab import NEW, OLD, history, kernel_finding, variant

JOB = "tailcall-subprog-stress"  # the lab history's job


class FakeApp:
    """Celery's send_task, recorded (the collector must only send, never wait)."""

    def __init__(self):
        self.sent: list[tuple[str, list, str]] = []

    def send_task(self, name, args=None, queue=None, **_):
        self.sent.append((name, args, queue))


def schedules(tmp_path, policy) -> "Path":  # noqa: F821
    (tmp_path / f"{JOB}.yaml").write_text("duration: 1s\ntopologies: [hierarchy]\n")
    path = tmp_path / "schedules.yaml"
    path.write_text(yaml.safe_dump({"schedules": [{"name": "weekly", "job": f"{JOB}.yaml", "cron": "0 4 * * 6",
                                                   "bisect_regressions": policy}]}))
    return path


def test_a_schedule_can_ask_for_its_regressions_to_be_bisected(tmp_path):
    from farm.queue.schedules import load_schedules
    [e] = load_schedules(schedules(tmp_path, {"cpu_models": ["EPYC-Milan", "Icelake-Server"], "repeat": 4,
                                              "good": "deb:linux-image-6.1.0-47-amd64-unsigned"}))
    assert e["bisect_regressions"] == {"cpu_models": ["EPYC-Milan", "Icelake-Server"], "repeat": 4,
                                       "good": "deb:linux-image-6.1.0-47-amd64-unsigned", "cell": None}
    [e] = load_schedules(schedules(tmp_path, True))
    assert e["bisect_regressions"] == {"cpu_models": ["EPYC-Milan"], "repeat": 3, "good": None, "cell": None}


@pytest.mark.parametrize("policy, says", [
    ("yes", "bisect_regressions: true, or a mapping"),
    ({"repeats": 3}, "bisect_regressions.repeats: unknown key"),
    ({"repeat": 0}, "bisect_regressions.repeat: 0 (a whole number, 1 to 20)"),
    ({"repeat": True}, "bisect_regressions.repeat: True"),
    ({"cpu_models": "EPYC-Milan"}, "bisect_regressions.cpu_models: a list of QEMU CPU models"),
    ({"cpu_models": ["EPYC Milan; rm"]}, "bisect_regressions.cpu_models"),
    ({"good": "linux-image-6.1.0-47-amd64"}, "bisect_regressions.good: 'linux-image-6.1.0-47-amd64' is not deb:"),
    ({"cell": "nope"}, "bisect_regressions.cell: unknown cell 'nope'"),
])
def test_a_bad_bisect_option_is_one_line_of_bad_input(tmp_path, policy, says):
    from farm.queue.schedules import load_schedules
    with pytest.raises(BadInput) as e:
        load_schedules(schedules(tmp_path, policy))
    assert says in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(f"{tmp_path / 'schedules.yaml'}: schedules[0].bisect_regressions")


def test_the_repositorys_schedules_still_load():
    from farm.queue.schedules import load_schedules
    from support import REPO
    assert all("bisect_regressions" in e or True for e in load_schedules(REPO / "jobs/schedules.yaml"))


@pytest.mark.slow
def test_the_collector_bisects_a_confirmed_regression_once(redis_server, tmp_path):
    """Real Redis, real SQLite: a tick leaves the schedule's policy; the
    zen4 regression (6.1.0-56 passed, the new kernel fails on two hosts) is
    sent once to the lab queue, not again for the next failure, nor by a
    restarted collector; without a policy nothing is sent; a flaky or
    awaiting class is never bisected."""
    from farm.queue.collector import Collector
    from farm.queue.registry import Registry
    from farm.queue.schedules import fire, load_schedules
    from farm.store import open_store
    url = f"sqlite:///{tmp_path}/farm.db"
    store = open_store(url)
    store.add_many([(r, None, None) for r in history()])
    reg = Registry(redis_server.client())
    app = FakeApp()
    zen4_fail = functools.partial(variant, history()[0], "zen4-a", NEW, datetime(2026, 9, 10),
                                  findings=[kernel_finding()])
    # no schedule asked: nothing
    assert Collector(app, reg, store).store(zen4_fail(200))
    assert app.sent == [] and store.bisections() == []
    # the beat's tick leaves the policy (with the job's text)
    [entry] = load_schedules(schedules(tmp_path, {"cpu_models": ["EPYC-Milan"], "repeat": 2}))
    fire(app, reg, entry, 1_000_000.0)
    assert reg.bisect_policy(JOB)["repeat"] == 2 and "hierarchy" in reg.bisect_policy(JOB)["spec"]
    app.sent.clear()  # the tick's own fan-out (no hosts here)
    assert Collector(app, reg, store).store(zen4_fail(201))
    bisects = [s for s in app.sent if s[0] == "farm.bisect"]
    assert len(bisects) == 1
    _, [payload], queue = bisects[0]
    assert queue == "lab"
    assert (payload["previous_kernel"], payload["kernel"], payload["job"]) == (OLD, NEW, JOB)
    assert payload["cpu_models"] == ["EPYC-Milan"] and payload["repeat"] == 2 and payload["cell"] == "default"
    assert payload["signature"] == kernel_finding()["signature"]
    [row] = store.bisections()
    assert row["status"] == "queued" and row["regression"] == payload["regression"]
    assert (row["good"], row["bad"], row["direction"]) == (OLD, NEW, "introduced")
    # the next failure of the same regression, and a restarted collector: never twice
    assert Collector(app, reg, store).store(zen4_fail(202))
    assert Collector(app, Registry(redis_server.client()), open_store(url)).store(zen4_fail(203))
    assert [s[0] for s in app.sent].count("farm.bisect") == 1
    # skl (awaiting a retry) fails again on the same host: no regression yet, no bisection
    skl = variant(history()[0], "skl-a", NEW, datetime(2026, 9, 11), 300, [kernel_finding("pagefault-bpf-prog")])
    assert Collector(app, reg, store).store(skl)
    assert [s[0] for s in app.sent].count("farm.bisect") == 1


# -- the task's body, with a faked lab ------------------------------------------------------


def test_the_task_bisects_the_regressions_packages_and_fills_its_row(tmp_path, monkeypatch):
    from farm.bisect import changelog
    from farm.bisect.run import run_bisect
    from farm.bisect.scheduled import run_scheduled
    from farm.store import open_store
    from test_bisect import ARCHIVE, SIG, FakeSteps, Oracle, bad, good
    monkeypatch.setenv("FARM_DB_URL", f"sqlite:///{tmp_path}/farm.db")
    store = open_store()
    key = f"{JOB}||6.1.0-47-amd64|6.12.111+deb12-amd64"
    assert store.claim_bisection(key, JOB, SIG, "introduced", "6.1.0-47-amd64", "6.12.111+deb12-amd64")
    entry = {"text": "bpf: x", "version": "6.1.192-3", "upstream": "6.1.192", "score": 5, "why": "bpf"}
    monkeypatch.setattr(changelog, "suspects_between", lambda a, b: {"ranked": [entry], "all": [entry]})
    monkeypatch.setattr(changelog, "config_diff", lambda a, b: {})
    chain = ["linux-image-6.1.0-47-amd64-unsigned", "linux-image-6.1.0-56-amd64-unsigned",
             "linux-image-6.1.0-57-amd64-unsigned", "linux-image-6.12.107+deb12-amd64-unsigned",
             "linux-image-6.12.111+deb12-amd64-unsigned"]
    oracle = Oracle({p: (bad if i >= 2 else good) for i, p in enumerate(chain)})
    runner = functools.partial(run_bisect, progress=lambda _: None, steps_factory=lambda: FakeSteps(oracle),
                               available=ARCHIVE)
    payload = {"regression": key, "job": JOB, "spec": "duration: 1s\ntopologies: [hierarchy]\n",
               "previous_kernel": "6.1.0-47-amd64", "kernel": "6.12.111+deb12-amd64", "good": None,
               "cpu_models": ["EPYC-Milan"], "repeat": 2, "cell": "default", "signature": SIG}
    said = run_scheduled(payload, store, ARCHIVE, runner)
    assert said == f"{key}: introduced in linux-image-6.1.0-57-amd64-unsigned"
    [row] = store.bisections()
    assert row["status"] == "named" and row["regression"] == key
    assert (row["boundary_older"], row["boundary_newer"]) == (chain[1], chain[2])
    assert row["top_suspect"] == "bpf: x"
    # the task delivered again (a worker lost before its ack): never a second bisection
    assert run_scheduled(payload, store, ARCHIVE, lambda *a, **k: pytest.fail("ran twice")).endswith(
        "nothing to do")
    # a kernel with no package: the row says why, and is never claimed again
    key2 = f"{JOB}||6.1.0-47-amd64|6.6.7"
    assert store.claim_bisection(key2, JOB, SIG, "introduced", "6.1.0-47-amd64", "6.6.7")
    said = run_scheduled({**payload, "regression": key2, "kernel": "6.6.7"}, store, ARCHIVE, runner)
    assert said == f"{key2}: failed: no kernel image package in the archive for 6.6.7"
    row2 = next(r for r in store.bisections() if r["regression"] == key2)
    assert row2["status"] == "failed" and "6.6.7" in row2["refused"]
    assert store.claim_bisection(key2, JOB, SIG, "introduced", "x", "y") is None
