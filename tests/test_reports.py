"""Reports a maintainer can act on (farm/notify): composed from a real
store, queued once per channel in the outbox, delivered to a real SMTP
server (aiosmtpd) and a real HTTP server on loopback, retried until a
receiver that was down is back (and then delivered once), never for a
`known` signature, never twice; bad delivery config is one line, exit 2."""
from __future__ import annotations

import base64
import copy
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from farm.notify import compose, outbox, sender, trigger
from farm.notify.settings import delivery
from farm.queue.collector import Collector
from farm.store import open_store
from farm.store.db import current_revision, make_engine, migrate
from farm.store.ingest import utcnow
from farm.store.models import Signature
from support.results_lab import T0, base, history, variant

FARM = [sys.executable, "-m", "farm.cli"]
UPSTREAM = {"linux-image-6.1.0-57-amd64": "6.1.170"}.get
GUEST_JOB = "tailcall-hierarchy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


# -- a store with one new signature from the virtual lab ---------------------------

def _listing_with(result: dict, name: str, extra: str) -> None:
    """Add an instruction to one kept JIT listing of the result (a kernel
    whose JIT emits one more instruction there)."""
    text_ = zlib.decompress(base64.b64decode(result["attachments"][name])).decode()
    lines = text_.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("ffffffff"))
    addr = lines[at].split(":")[0]
    lines.insert(at + 1, f"{addr}:\t0f ae e8             \t{extra}")
    result["attachments"][name] = base64.b64encode(zlib.compress("\n".join(lines).encode())).decode()
    for p in result["programs"]:
        if f"{p['name']}.S" == name:
            p["jited_sha256"] = "0" * 64


def guest_results() -> tuple[dict, dict]:
    """A passing run on 6.12 and a failing one (tail-call-count, with a
    reproduce block) on 6.1.0-57-amd64, both EPYC-Milan guests in cell lfence."""
    cell = {"name": "lfence", "requested": True, "cmdline": "spectre_v2=retpoline,lfence",
            "indirect_jump": "lfence", "return": "srso", "vulnerabilities": {}}
    facts = {"hostname": "vm-epyc-milan", "vendor": "AuthenticAMD", "family": 25, "model": 1, "stepping": 1,
             "model_name": "AMD EPYC-Milan Processor", "microcode": "0x1000065", "spectre_v2": "Mitigation: LFENCE",
             "hw_class": "amd-zen3", "cell": cell}
    ok = variant(base("pass"), "vm-epyc-milan", "6.12.48+deb13-amd64", T0, 101,
                 facts={**facts, "kernel": "6.12.48+deb13-amd64"})
    bad = variant(base("fail-tail-call-count"), "vm-epyc-milan", "6.1.0-57-amd64", T0 + timedelta(hours=1), 102,
                  facts={**facts, "kernel": "6.1.0-57-amd64"})
    for r in (ok, bad):
        r["job"] = GUEST_JOB
        r["run_id"] = r["run_id"].replace("tailcall-subprog-stress", GUEST_JOB)
        for f in r["findings"]:
            f["detail"]["reproduce"]["job"] = GUEST_JOB
    _listing_with(bad, "0-chain-limit-direct/t0_0.S", "lfence")
    return ok, bad


@pytest.fixture
def store(tmp_path):
    return open_store(f"sqlite:///{tmp_path}/farm.db")


def stored(store, *results, channels=("smtp", "webhook")) -> list[str]:
    """Store each result as the collector does, then queue its reports."""
    out = []
    for r in results:
        assert store.add(r)
        out += trigger.reports_for_result(store, r, channels, upstream=UPSTREAM)
    return out


# -- receivers ---------------------------------------------------------------------

class Mailbox:
    """A real SMTP server (aiosmtpd) on a free loopback port, with AUTH."""

    def __init__(self, user: str, password: str, port: int | None = None):
        self.port, self.user, self.password = port or free_port(), user, password
        self.messages: list[tuple[list[str], bytes]] = []
        self.logins: list[str] = []
        self.controller = None

    def start(self) -> "Mailbox":
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.messages.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == box.user and auth_data.password.decode() == box.password
            if ok:
                box.logins.append(auth_data.login.decode())
            return AuthResult(success=ok, handled=False)  # a failure answers 535

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticator,
                                     auth_required=True, auth_require_tls=False)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()


class Hook:
    """A real HTTP server (http.server in a thread) on loopback that keeps
    every POST: its headers and JSON body."""

    def __init__(self, port: int | None = None, status: int = 200):
        self.port, self.status = port or free_port(), status
        self.posts: list[tuple[dict, dict]] = []
        self.server = None

    def start(self) -> "Hook":
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((dict(self.headers), json.loads(body)))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/farm"


@pytest.fixture
def receivers(tmp_path):
    started = []

    def make(kind: str, **kw):
        r = Mailbox("farm", "s3cret-pw", **kw) if kind == "smtp" else Hook(**kw)
        started.append(r)
        return r
    yield make
    for r in started:
        r.stop()


def smtp_config(tmp_path: Path, port: int) -> dict:
    return {"smtp": {"host": "127.0.0.1", "port": port, "from": "farm@lab.example", "to": ["bpf@lists.example"],
                     "user": "farm", "password_file": str(secret_file(tmp_path / "smtp.pw", "s3cret-pw"))}}


# -- compose ----------------------------------------------------------------------

def test_signature_report_has_the_shape_of_a_syzbot_mail(store):
    ok, bad = guest_results()
    ids = stored(store, ok, bad)
    rid = compose.signature_report_id("tail-call-count in chain-limit-direct")
    assert ids == [rid] and rid.startswith("farm-") and len(rid) == 21
    row = next(r for r in outbox.rows(store) if r.channel == "smtp")
    body, doc = row.body, row.document
    assert row.title == "farm: tail-call-count in chain-limit-direct on amd-zen3 / 6.1.0-57-amd64"
    # where
    assert "AuthenticAMD AMD EPYC-Milan Processor (family/model/stepping 25/1/1), class amd-zen3" in body
    assert "microcode:  0x1000065" in body
    assert "kernel:     6.1.0-57-amd64 (package linux-image-6.1.0-57-amd64, upstream 6.1.170)" in body
    assert "cell:       lfence (indirect jump lfence, return srso)" in body
    # evidence: expected against observed, and the JIT diff between the passing and the failing guest
    assert "expected:   33" in body and "observed:   20: 20000" in body and "allowed:    0, 1, 2" in body
    assert "occurrences: 130" in body
    assert "JIT listing of 0-chain-limit-direct/t0_0: passing vm-epyc-milan (amd-zen3, 6.12.48+deb13-amd64" in body
    assert "  ++0x0:\tlfence" in body  # the instruction the failing kernel added
    assert doc["evidence"]["jit_diff"]["lines"]
    # reproduce, with the finding's own block
    assert ("farm lab run jobs/tailcall-hierarchy.yaml --cpu-model EPYC-Milan "
            "--kernel deb:linux-image-6.1.0-57-amd64 --cell lfence") in body
    assert "topology chain-limit-direct, fault short-chain, slots 1, cpu 1, repeat 20000" in body
    assert f"Dedup id: {rid}" in body and doc["id"] == rid
    assert doc["reproduce"]["argv"][:3] == ["farm", "lab", "run"]
    assert doc["bisection"] is None and "Bisection: none yet" in body


def test_the_dedup_id_is_stable_and_distinct():
    a = compose.signature_report_id("kernel BUG in prog_array_map_poke_run")
    assert a == compose.signature_report_id("kernel BUG in prog_array_map_poke_run")
    assert a != compose.signature_report_id("kernel BUG in prog_array_map_poke_*")
    assert compose.regression_report_id("j", "amd-zen4", "", "6.6.7") != \
        compose.regression_report_id("j", "amd-zen4", "lfence", "6.6.7")


def test_crash_report_quotes_the_oops_and_a_confirmed_regression_gets_its_own(store):
    ids = stored(store, *history())
    rows = {(r.report_id, r.channel): r for r in outbox.rows(store)}
    bug = compose.signature_report_id("kernel BUG in prog_array_map_poke_run")
    body = rows[(bug, "smtp")].body
    assert "Kernel log (run " in body and "kernel BUG at kernel/bpf/arraymap.c:1106!" in body
    assert "RIP: 0010:prog_array_map_poke_run+0x1c9/0x1e0" in body
    reg = compose.regression_report_id("tailcall-subprog-stress", "amd-zen4", "", "6.6.7")
    assert reg in ids
    r = rows[(reg, "webhook")]
    assert r.subject == "regression"
    assert r.title == "farm: regression tailcall-subprog-stress on amd-zen4 / 6.6.7 (6.1.0-56-amd64 passed)"
    assert "It failed on zen4-a and again on zen4-b" in r.body
    # the flaky zen2 and the skylake awaiting a retry are no regression reports
    assert {x.subject for x in rows.values()} == {"signature", "regression"}
    assert sum(1 for (_, ch), x in rows.items() if x.subject == "regression" and ch == "smtp") == 1
    # a lost host is lab health: no report of its own
    assert not any("host-lost" in x.title for x in rows.values())


def test_a_report_carries_the_newest_bisection_of_its_signature(store):
    sig = "tail-call-count in chain-limit-direct"
    assert compose.latest_bisection(store, sig) is None
    bis = {"job": "hier", "direction": "introduced", "confidence": 0.95, "signature": sig,
           "good": {"package": "linux-image-6.1.0-56-amd64", "upstream": "6.1.158", "version": "6.1.158-1"},
           "bad": {"package": "linux-image-6.1.0-57-amd64", "upstream": "6.1.170", "version": "6.1.170-1"},
           "boundary": [{"package": "linux-image-6.1.0-56-amd64", "upstream": "6.1.158", "version": "6.1.158-1"},
                        {"package": "linux-image-6.1.0-57-amd64", "upstream": "6.1.170", "version": "6.1.170-1"}],
           "refused": None, "steps": [],
           "suspects": {"ranked": [{"text": "bpf, x86: fix tail call count with subprogs", "score": 9}], "all": []},
           "config_diff": {},
           "log": "linux-image-6.1.0-56-amd64: good (10/10 pass)\nlinux-image-6.1.0-57-amd64: bad (7/10)"}
    store.add_bisection({**bis, "boundary": None, "refused": "the bad end does not reproduce"})  # names nothing
    store.add_bisection(bis)
    assert compose.latest_bisection(store, sig)["boundary"] == bis["boundary"]
    assert compose.latest_bisection(store, "another signature") is None
    ok, bad = guest_results()
    stored(store, ok, bad)
    body = outbox.rows(store)[0].body
    assert "Bisection (introduced in linux-image-6.1.0-57-amd64, confidence 0.95):" in body
    assert "last good:  linux-image-6.1.0-56-amd64 (upstream 6.1.158)" in body
    assert "first bad:  linux-image-6.1.0-57-amd64 (upstream 6.1.170)" in body
    assert "bpf, x86: fix tail call count with subprogs" in body and "bad (7/10)" in body


# -- delivery ---------------------------------------------------------------------

def test_an_email_arrives_at_a_real_smtp_server(store, receivers, tmp_path):
    box = receivers("smtp").start()
    d = delivery(smtp_config(tmp_path, box.port))
    ok, bad = guest_results()
    [rid] = stored(store, ok, bad, channels=d.channels)
    assert sender.drain(store, d) == {"sent": 1, "failed": 0, "suppressed": 0}
    assert box.logins == ["farm"]  # the password came from the file
    [(rcpt, raw)] = box.messages
    assert rcpt == ["bpf@lists.example"]
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["Subject"] == "farm: tail-call-count in chain-limit-direct on amd-zen3 / 6.1.0-57-amd64"
    assert mail["Message-ID"] == f"<{rid}@farm.reports>" and mail["X-Farm-Report-Id"] == rid
    body = mail.get_content()
    assert "expected:   33" in body and "observed:   20: 20000" in body
    assert "farm lab run jobs/tailcall-hierarchy.yaml --cpu-model EPYC-Milan" in body
    assert f"Dedup id: {rid}" in body
    assert mail["Content-Transfer-Encoding"] == "7bit"  # plain text a mailing list archive shows as it is
    [row] = outbox.rows(store)
    assert row.state == "sent" and row.attempts == 1 and row.sent_at is not None
    assert sender.drain(store, d) == {"sent": 0, "failed": 0, "suppressed": 0}
    assert len(box.messages) == 1


def test_a_wrong_smtp_password_is_a_failed_delivery_kept_for_later(store, receivers, tmp_path):
    box = receivers("smtp").start()
    cfg = smtp_config(tmp_path, box.port)
    secret_file(Path(cfg["smtp"]["password_file"]), "wrong")
    d = delivery(cfg)
    stored(store, *guest_results(), channels=d.channels)
    assert sender.drain(store, d)["failed"] == 1
    [row] = outbox.rows(store)
    assert row.state == "pending" and "SMTPAuthenticationError" in row.last_error and not box.messages


def test_a_webhook_post_arrives_at_a_real_http_server(store, receivers, tmp_path):
    hook = receivers("webhook").start()
    d = delivery({"webhook": {"url": hook.url, "token_file": str(secret_file(tmp_path / "tok", "t0ken"))}})
    [rid] = stored(store, *guest_results(), channels=d.channels)
    assert sender.drain(store, d)["sent"] == 1
    [(headers, doc)] = hook.posts
    assert headers["Idempotency-Key"] == rid and headers["X-Farm-Report-Id"] == rid
    assert headers["Authorization"] == "Bearer t0ken" and headers["Content-Type"] == "application/json"
    assert doc["id"] == rid and doc["subject"] == "signature" and doc["schema"] == 1
    assert doc["where"]["upstream"] == "6.1.170" and doc["where"]["cell"]["name"] == "lfence"
    assert doc["evidence"]["expected"] == 33 and doc["evidence"]["observed"] == {"20": 20000}
    assert doc["reproduce"]["topology"] == "chain-limit-direct"


def test_a_webhook_that_answers_an_error_is_retried(store, receivers):
    hook = receivers("webhook", status=503).start()
    d = delivery({"webhook": {"url": hook.url}})
    stored(store, *guest_results(), channels=d.channels)
    assert sender.drain(store, d)["failed"] == 1 and len(hook.posts) == 1
    [row] = outbox.rows(store)
    assert row.state == "pending" and "HTTP 503" in row.last_error


@pytest.mark.parametrize("kind", ["webhook", "smtp"])
def test_a_receiver_down_at_first_gets_the_report_once_it_is_back(store, receivers, tmp_path, kind):
    port = free_port()
    cfg = smtp_config(tmp_path, port) if kind == "smtp" else {"webhook": {"url": f"http://127.0.0.1:{port}/h"}}
    d = delivery({**cfg, "retry_first_s": 60, "retry_max_s": 600})
    [rid] = stored(store, *guest_results(), channels=d.channels)
    t0 = utcnow()
    assert sender.drain(store, d, now=t0) == {"sent": 0, "failed": 1, "suppressed": 0}
    [row] = outbox.rows(store)
    assert row.state == "pending" and row.attempts == 1 and row.next_try == t0 + timedelta(seconds=60)
    # a second failure doubles the wait
    assert sender.drain(store, d, now=t0 + timedelta(seconds=61))["failed"] == 1
    assert outbox.rows(store)[0].next_try == t0 + timedelta(seconds=61 + 120)
    receiver = receivers(kind, port=port).start()
    # not due yet: the receiver is up but the backoff holds
    assert sender.drain(store, d, now=t0 + timedelta(seconds=62))["sent"] == 0
    assert sender.drain(store, d, now=t0 + timedelta(seconds=182))["sent"] == 1
    for later in (200, 4000, 90000):
        assert sender.drain(store, d, now=t0 + timedelta(seconds=later)) == {"sent": 0, "failed": 0, "suppressed": 0}
    got = receiver.posts if kind == "webhook" else receiver.messages
    assert len(got) == 1
    [row] = outbox.rows(store)
    assert row.state == "sent" and row.attempts == 3 and row.report_id == rid


@pytest.mark.slow
def test_the_sender_loop_delivers_once_the_receiver_is_back(store, receivers):
    port = free_port()
    d = delivery({"webhook": {"url": f"http://127.0.0.1:{port}/h"}, "retry_first_s": 0.3, "retry_max_s": 0.3})
    stored(store, *guest_results(), channels=d.channels)
    stop, wake, said = threading.Event(), threading.Event(), []
    loop = threading.Thread(target=sender.send_forever, args=(store, d, stop, wake, 0.05, said.append))
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while not any("failed" in x for x in said):
            assert time.monotonic() < deadline, said
            time.sleep(0.02)
        hook = receivers("webhook", port=port).start()
        while outbox.rows(store)[0].state != "sent":
            assert time.monotonic() < deadline, said
            time.sleep(0.02)
        time.sleep(1.0)  # the loop keeps going: nothing more may arrive
    finally:
        stop.set()
        wake.set()
        loop.join(5)
    assert not loop.is_alive()
    assert len(hook.posts) == 1


# -- once, and never for a known signature ------------------------------------------

def test_the_same_signature_in_a_second_run_is_not_reported_twice(store):
    ok, bad = guest_results()
    assert len(stored(store, ok, bad)) == 1
    again = copy.deepcopy(bad)
    again["run_id"] += "-again"
    assert stored(store, again) == []
    assert len(outbox.rows(store)) == 2  # one row per channel, still
    report = compose.signature_report(store, store.session().get(Signature, 1), UPSTREAM)
    assert outbox.enqueue(store, report, ("smtp", "webhook")) == 0  # enqueueing again adds nothing


def test_a_known_signature_is_not_reported(store):
    ok, bad = guest_results()
    # a known-issues glob matches it before it is first seen
    store.load_known([("tail-call-count in chain-*", "https://lore.kernel.org/bpf/x", "known")])
    assert stored(store, ok, bad) == []
    assert outbox.rows(store) == []


def test_a_signature_marked_known_by_hand_is_not_reported_again(store):
    ok, bad = guest_results()
    assert stored(store, ok, bad, channels=()) == []  # seen while no delivery was set up
    with store.session() as s:
        sig_id = s.query(Signature.id).scalar()
    store.set_status(sig_id, "known")  # farm triage signatures --mark ID=known
    again = {**copy.deepcopy(bad), "run_id": bad["run_id"] + "-again"}
    assert stored(store, again) == [] and outbox.rows(store) == []
    store.set_status(sig_id, "open")  # unmarked: it is reported (once)
    third = {**copy.deepcopy(bad), "run_id": bad["run_id"] + "-third"}
    assert len(stored(store, third)) == 1


def test_a_signature_marked_known_before_delivery_is_suppressed(store, receivers):
    hook = receivers("webhook").start()
    d = delivery({"webhook": {"url": hook.url}})
    stored(store, *guest_results(), channels=d.channels)
    [row] = outbox.rows(store)
    store.set_status(row.signature_id, "known")
    assert sender.drain(store, d) == {"sent": 0, "failed": 0, "suppressed": 1}
    assert outbox.rows(store)[0].state == "suppressed" and not hook.posts


class _Registry:
    """What Collector.store asks of the registry, in memory."""

    def __init__(self):
        self.states = {}

    def cache_result(self, run_id, result):
        pass

    def set_run_state(self, run_id, state, verdict=None):
        self.states[run_id] = state

    def note_loss(self, host):
        pass

    def release(self, host):
        pass


def test_the_collector_queues_a_report_once_per_new_signature(store):
    wake = threading.Event()
    c = Collector(None, _Registry(), store, ("webhook",), wake)
    ok, bad = guest_results()
    assert c.store(ok) and outbox.rows(store) == [] and not wake.is_set()
    assert c.store(bad)
    assert wake.is_set()
    [row] = outbox.rows(store)
    assert row.title.startswith("farm: tail-call-count in chain-limit-direct")
    assert not c.store(bad)  # a redelivery: stored once, reported once
    again = {**copy.deepcopy(bad), "run_id": bad["run_id"] + "-2"}
    assert c.store(again)
    assert len(outbox.rows(store)) == 1
    # without channels the collector queues nothing
    other = Collector(None, _Registry(), open_store(f"sqlite:///{store.engine.url.database}-2"))
    assert other.store(bad) and outbox.rows(other.results) == []


def test_migration_0006_upgrades_a_database_at_0004(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    migrate(engine, "0004")
    assert current_revision(engine) == "0004"
    s = open_store(f"sqlite:///{tmp_path}/old.db")
    assert current_revision(s.engine) == "0007"  # the head: the metrics indexes came after
    assert outbox.rows(s) == []


# -- the command line and the config ---------------------------------------------------

def farm(args, tmp_path, config: dict | str | None = None):
    env = {**os.environ, "FARM_STATE_DIR": str(tmp_path / "state"), "FARM_DB_URL": f"sqlite:///{tmp_path}/farm.db"}
    env.pop("FARM_CONFIG", None)
    if config is not None:
        path = tmp_path / "config.yaml"
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
        env["FARM_CONFIG"] = str(path)
    return subprocess.run(FARM + args, capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).parent.parent)


BAD_CONFIGS = [
    ({"reports": ["smtp"]}, "reports in the farm config is a mapping"),
    ({"reports": {"smtp": {"host": "h", "from": "a@b", "to": "c@d", "password": "x"}}}, "never put a secret"),
    ({"reports": {"smtp": {"host": "h", "from": "a@b", "to": "c@d", "port": 70000}}}, "reports.smtp.port"),
    ({"reports": {"smtp": {"host": "h", "from": "nobody", "to": "c@d"}}}, "reports.smtp.from"),
    ({"reports": {"smtp": {"host": "h", "from": "a@b", "to": []}}}, "reports.smtp.to"),
    ({"reports": {"smtp": {"host": "h", "from": "a@b", "to": "c@d", "user": "u"}}}, "go together"),
    ({"reports": {"smtp": {"host": "h", "from": "a@b", "to": "c@d", "user": "u",
                           "password_file": "/nonexistent/pw"}}}, "No such file"),
    ({"reports": {"smtp": {"host": "h", "from": "a@b", "to": "c@d", "starttls": "yes"}}}, "starttls"),
    ({"reports": {"webhook": {"url": "ftp://x"}}}, "reports.webhook.url"),
    ({"reports": {"webhook": {"url": "https://u:p@x/h"}}}, "no credentials in the URL"),
    ({"reports": {"webhook": {"url": "https://x/h", "token": "t"}}}, "never put a secret"),
    ({"reports": {"webhook": {"url": "https://x/h"}, "retry_first_s": -1}}, "retry_first_s"),
    ({"reports": {"mail": {}}}, "unknown key 'mail'"),
    ({}, "no report delivery configured"),
    ("reports: [unclosed", "not valid YAML"),
]


@pytest.mark.slow
@pytest.mark.parametrize("config,said", BAD_CONFIGS, ids=[str(i) for i in range(len(BAD_CONFIGS))])
def test_bad_delivery_config_is_one_line_exit_2(tmp_path, config, said):
    p = farm(["report", "send", "--once"], tmp_path, config)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert said in p.stderr, p.stderr


def test_a_secret_file_others_may_read_is_refused(tmp_path):
    from farm.errors import BadInput
    pw = secret_file(tmp_path / "pw", "x")
    pw.chmod(0o644)
    with pytest.raises(BadInput, match="readable by group or others"):
        delivery({"smtp": {"host": "h", "from": "a@b", "to": "c@d", "user": "u", "password_file": str(pw)}})


@pytest.mark.slow
def test_report_send_once_and_outbox_from_the_command_line(tmp_path, receivers):
    hook = receivers("webhook").start()
    s = open_store(f"sqlite:///{tmp_path}/farm.db")
    [rid] = stored(s, *guest_results(), channels=("webhook",))
    config = {"reports": {"webhook": {"url": hook.url}}}
    p = farm(["report", "outbox"], tmp_path, config)
    assert p.returncode == 0 and rid in p.stdout and "pending" in p.stdout, p.stdout + p.stderr
    p = farm(["report", "send", "--once"], tmp_path, config)
    assert p.returncode == 0, p.stderr
    assert "1 sent, 0 failed" in p.stdout and len(hook.posts) == 1
    p = farm(["report", "outbox", "--json"], tmp_path, config)
    [row] = json.loads(p.stdout)
    assert row["report_id"] == rid and row["state"] == "sent" and row["attempts"] == 1
    p = farm(["report", "send", "--once"], tmp_path, config)
    assert "0 sent" in p.stdout and len(hook.posts) == 1
    hook.stop()
    stored(s, {**guest_results()[1], "run_id": "other-run"} | {"findings": [
        {**guest_results()[1]["findings"][0], "signature": "wrong-target in chain-limit-direct",
         "kind": "wrong-target"}]}, channels=("webhook",))
    p = farm(["report", "send", "--once"], tmp_path, config)
    assert p.returncode == 3 and "0 sent, 1 failed" in p.stdout
