"""Stored bisections (store 0005): the upgrade from 0004 keeps the history,
an answer goes in and reads back, a regression is claimed once, and
`farm triage --signature` and the HTML signature page say "introduced in" /
"fixed in ... (suspect: ...)". On SQLite, and on a real PostgreSQL server."""
from __future__ import annotations

import json
import subprocess

import pytest
from sqlalchemy import func, inspect, select

from farm.store import open_store
from farm.store.db import current_revision, make_engine, migrate
from farm.store.models import Run
from support import REPO, farm_cmd
from support.results_lab import history

SIG = "tail-call-count in chain-limit-direct"  # one of the lab history's signatures
OLDER, NEWER = "linux-image-6.1.0-57-amd64-unsigned", "linux-image-6.12.107+deb12-amd64-unsigned"
SUSPECT = "bpf, x86: Fix tail call count offset calculation on bpf2bpf call"


def answer(direction="fixed", boundary=True, signature=SIG) -> dict:
    pkg = {OLDER: ("6.1.192", "6.1.192-3"), NEWER: ("6.12.107", "6.12.107-1~deb12u1")}
    entry = {"text": SUSPECT, "version": "6.12.107-1", "upstream": "6.12.107", "score": 10, "why": "tail call"}
    good, bad = (NEWER, OLDER) if direction == "fixed" else (OLDER, NEWER)
    return {"job": "tailcall-subprog-stress", "direction": direction, "signature": signature,
            "good": {"package": good, "upstream": pkg[good][0], "version": pkg[good][1]},
            "bad": {"package": bad, "upstream": pkg[bad][0], "version": pkg[bad][1]},
            "boundary": [{"package": p, "upstream": pkg[p][0], "version": pkg[p][1]} for p in (OLDER, NEWER)]
            if boundary else None, "refused": None if boundary else "the bad end does not reproduce",
            "steps": [], "confidence": 0.98 if boundary else None,
            "suspects": {"ranked": [entry], "all": [entry]} if boundary else None, "config_diff": {}}


def check_store(url: str) -> None:
    store = open_store(url)
    assert current_revision(store.engine) == "0007"  # the head: reports, then metrics indexes, came after
    assert store.add_many([(r, None, None) for r in history()]) == len(history())
    i = store.add_bisection(answer())
    [row] = store.bisections(signature=SIG)
    assert row["id"] == i and row["status"] == "named"
    assert (row["boundary_older"], row["boundary_newer"], row["upstream_newer"]) == (OLDER, NEWER, "6.12.107")
    assert row["top_suspect"] == SUSPECT and row["confidence"] == pytest.approx(0.98)
    assert json.loads(row["suspects"])["ranked"][0]["text"] == SUSPECT
    assert store.bisection_answer(i)["boundary"][1]["package"] == NEWER  # the whole JSON kept
    # a regression is claimed once; its answer fills the claimed row
    first = store.claim_bisection("reg:1", "tailcall-subprog-stress", SIG, "introduced", OLDER, NEWER)
    assert first is not None
    assert store.claim_bisection("reg:1", "tailcall-subprog-stress", SIG, "introduced", OLDER, NEWER) is None
    assert store.add_bisection(answer("introduced"), regression="reg:1") == first
    rows = {r["regression"]: r for r in store.bisections(signature=SIG)}
    assert rows["reg:1"]["status"] == "named" and rows["reg:1"]["direction"] == "introduced"
    assert len(rows) == 2
    store.engine.dispose()


def test_bisections_are_stored_and_a_regression_is_claimed_once_on_sqlite(tmp_path):
    check_store(f"sqlite:///{tmp_path}/farm.db")


@pytest.mark.postgres
@pytest.mark.slow
def test_bisections_are_stored_and_a_regression_is_claimed_once_on_postgresql(postgres_server):
    check_store(postgres_server.url)


def test_the_upgrade_from_0004_keeps_every_run_and_adds_an_empty_bisections_table(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    migrate(engine, "0004")
    assert "bisections" not in inspect(engine).get_table_names()
    from farm.store import Store
    Store(engine).add_many([(r, None, None) for r in history()])
    engine.dispose()
    store = open_store(url)
    assert current_revision(store.engine) == "0007"  # the head: reports, then metrics indexes, came after
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == len(history())
    assert store.bisections() == []
    from alembic import command

    from farm.store.db import _alembic_config
    with store.engine.begin() as conn:  # and back down
        command.downgrade(_alembic_config(conn), "0004")
    assert "bisections" not in inspect(store.engine).get_table_names()


def test_triage_and_the_signature_page_show_where_it_was_fixed_and_introduced(tmp_path):
    url = f"sqlite:///{tmp_path}/farm.db"
    store = open_store(url)
    store.add_many([(r, None, None) for r in history()])
    store.add_bisection(answer("fixed"))
    store.add_bisection(answer("introduced", boundary=False))
    env = {"FARM_DB_URL": url, "PATH": "/usr/bin:/bin"}
    p = subprocess.run(farm_cmd("triage", "--signature", SIG), cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"fixed in {NEWER} (6.12.107) (suspect: {SUSPECT})" in p.stdout
    assert "bisection refused: the bad end does not reproduce" in p.stdout
    j = subprocess.run(farm_cmd("triage", "--signature", SIG, "--json"), cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    texts = [b["text"] for b in json.loads(j.stdout)["bisections"]]
    assert any(t.startswith(f"fixed in {NEWER} (6.12.107) (suspect: ") for t in texts)
    # the HTML signature page
    from farm.report.html import render
    from farm.report.signatures import find_signature
    out = render(store, tmp_path / "html")
    sig = find_signature(store, SIG)
    page = (out.parent / f"sig-{sig.id}.html").read_text()
    assert f"fixed in {NEWER} (6.12.107) (suspect: {SUSPECT})" in page
    # another signature's page says nothing of this bisection
    pages = [p for p in (out.parent).glob("sig-*.html") if p.name != f"sig-{sig.id}.html"]
    assert pages and all("fixed in" not in p.read_text() for p in pages)
