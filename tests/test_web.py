"""farm web against a real lab that `farm up` started (redis-server on a free
loopback port, a real worker, the collector, beat and the web page), seen
through headless Chromium and a plain HTTP client that keeps its cookies
as a browser does."""
from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import re
import signal
import socket
import stat
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from farm.errors import EXIT_PASS
from farm.web import security
from support import REPO, farm_cmd, wait_for
from support.lab import free_port
from support.png import count_colours, png_pixels

CHROMIUM = Path("/usr/bin/chromium")
HOST = "web-1"
PASS_GREEN = (46, 204, 64)  # .v-pass in farm/web/static/web.css, the report's pass colour


# -- the guards, pure --------------------------------------------------------------------


def test_a_csrf_token_is_only_good_for_its_own_cookie_and_secret():
    secret, cookie = b"s" * 32, security.new_csrf_cookie()
    token = security.csrf_token(secret, cookie)
    assert security.csrf_ok(secret, cookie, token)
    assert not security.csrf_ok(secret, security.new_csrf_cookie(), token)  # another browser's
    assert not security.csrf_ok(b"t" * 32, cookie, token)                   # another server's
    assert not security.csrf_ok(secret, cookie, None) and not security.csrf_ok(secret, None, token)
    assert not security.csrf_ok(secret, cookie, token[:-1])


def test_the_login_wants_farm_and_the_password_in_basic_auth():
    def basic(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()
    assert security.login_ok(basic("farm:pw"), "pw")
    for bad in (basic("farm:wrong"), basic("root:pw"), basic("farmpw"), "Bearer pw", "Basic !!!", "", None):
        assert not security.login_ok(bad, "pw"), bad


def test_farm_web_refuses_a_bad_address_and_a_port_in_use_in_one_line(tmp_path):
    env = {**os.environ, "FARM_STATE_DIR": str(tmp_path)}
    bad = subprocess.run(farm_cmd("web", "--bind", "not-an-address"), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr == "farm: --bind: 'not-an-address' is not an IP address\n"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(farm_cmd("web", "--port", str(port)), cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)
    assert busy.returncode == 3 and busy.stderr.startswith(f"farm: farm web cannot listen on 127.0.0.1:{port}")
    assert len(busy.stderr.splitlines()) == 1


def test_loopback_needs_no_login_and_answers_only_to_loopback_names(tmp_path):
    assert security.login_password("127.0.0.1", tmp_path) is None
    assert "evil.example" not in security.allowed_hosts("127.0.0.1")
    password = security.login_password("0.0.0.0", tmp_path)
    assert len(password) >= 32 and security.allowed_hosts("0.0.0.0") == ["*"]
    assert stat.S_IMODE(security.password_file(tmp_path).stat().st_mode) == 0o600
    assert security.login_password("0.0.0.0", tmp_path) == password  # generated once


# -- a real lab ----------------------------------------------------------------------------


class Browser:
    """An HTTP client with a cookie jar that never follows redirects."""

    def __init__(self, base: str, auth: str | None = None):
        self.base, self.auth = base, auth
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def request(self, path: str, form: dict | None = None) -> tuple[int, str, dict]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data)
        if self.auth:
            req.add_header("Authorization", self.auth)
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace"), dict(e.headers)

    def token(self, path: str) -> str:
        status, body, _ = self.request(path)
        assert status == 200, body
        return re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1)


@pytest.fixture(scope="module")
def web_lab(tmp_path_factory):
    """`farm up` with its own redis-server, worker (host web-1), collector,
    beat (no schedules) and web page, for the module's tests."""
    tmp = tmp_path_factory.mktemp("web")
    state, schedules = tmp / "state", tmp / "schedules.yaml"
    state.mkdir()
    schedules.write_text("schedules: []\n")
    redis_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("FARM_BROKER_URL",)}
    env.update(FARM_STATE_DIR=str(state), FARM_DB_URL="", FARM_HEARTBEAT_TTL="4",
               FARM_FACTS_OVERRIDE=json.dumps({"hostname": HOST, "vendor": "AuthenticAMD"}))
    log = tmp / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(farm_cmd("up", "--port", str(redis_port), "--web-port", str(web_port),
                                       "--schedules", str(schedules)),
                              cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{web_port}"
    lab = {"up": up, "base": base, "state": state, "env": env, "log": log,
           "broker": f"redis://127.0.0.1:{redis_port}/0", "tmp": tmp}
    try:
        def worker_up():
            if up.poll() is not None:
                return True
            try:
                _, body, _ = Browser(base).request("/hosts")
            except OSError:
                return False
            return f'data-host="{HOST}"' in body and ">up<" in body
        wait_for(worker_up, "farm up's worker on the hosts page", 120, 0.25)
        assert up.poll() is None, log.read_text()[-4000:]
        assert f"the lab's page is at http://127.0.0.1:{web_port}/" in log.read_text()
        yield lab
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == EXIT_PASS, log.read_text()[-4000:]


def chromium(url: str, tmp: Path, *how: str) -> subprocess.CompletedProcess:
    """Headless Chromium on url: --dump-dom or --screenshot=PATH."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (Debian package chromium)")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--window-size=1200,800", *how, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)})


def farm_hosts(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(farm_cmd("hosts", *args), cwd=REPO, env={**lab["env"], "FARM_BROKER_URL": lab["broker"]},
                          capture_output=True, text=True, timeout=60)


def health_of(lab) -> str:
    p = farm_hosts(lab, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)[HOST]["health"]


@pytest.mark.slow
@pytest.mark.browser
def test_chromium_sees_the_worker_on_the_hosts_page(web_lab, tmp_path):
    dom = chromium(web_lab["base"] + "/hosts", tmp_path, "--dump-dom").stdout
    row = re.search(rf'<tr data-host="{HOST}".*?</tr>', dom, re.S)
    assert row, dom[-3000:]
    assert 'class="health">healthy<' in row.group(0) and 'class="alive">up<' in row.group(0)
    assert "amd" in row.group(0) and os.uname().release in row.group(0)  # vendor, kernel


@pytest.mark.slow
@pytest.mark.browser
def test_a_job_from_the_submit_form_reaches_done_in_the_browser_with_its_verdict(web_lab, tmp_path):
    b = Browser(web_lab["base"])
    runs_before = runs_by_verdict(b)
    status, body, _ = b.request("/submit")
    assert status == 200 and '<option value="health.yaml">' in body
    assert "schedules.yaml" not in body and "cells.yaml" not in body  # not jobs
    status, _, headers = b.request("/submit", {"csrf": b.token("/submit"), "job": "health.yaml", "hosts": HOST,
                                                "duration": "1s"})
    assert status == 303, headers
    page = headers["location"]
    assert page.startswith("/submissions/s")
    _, part, _ = b.request(page + "?part=1")  # what the page's script fetches to follow the runs
    assert part.startswith('<div id="progress"') and "<html" not in part

    def done_in_chromium():
        dom = chromium(web_lab["base"] + page, tmp_path, "--dump-dom").stdout
        return 'class="done">done<' in dom and dom
    dom = wait_for(done_in_chromium, "the submission page to say done", 120, 0.5)
    assert re.search(r'verdict <b class="verdict v-pass">pass</b>', dom), dom[-3000:]
    assert re.search(rf"<h3>{HOST}: <span class=\"verdict v-pass\">pass</span></h3>", dom)
    assert "tail calls verified" in dom and "No findings." in dom
    shot = tmp_path / "submission.png"
    chromium(web_lab["base"] + page, tmp_path, f"--screenshot={shot}")
    _, _, rows = png_pixels(shot.read_bytes())
    assert count_colours(rows, {"pass": PASS_GREEN})["pass"] > 200  # the verdict's green, in the picture
    # and the run is in the triage views, live from the database: the very body `farm report --html` writes
    _, triage, _ = b.request("/triage/")
    live = re.search(r'<div class="triage">(.*)</div>\s*</body>', triage, re.S).group(1)
    assert 'class="entry s-pass" data-hw-class=' in live and "<h2>Bisections</h2>" in live
    report = subprocess.run(farm_cmd("report", "--html", str(tmp_path / "report")), cwd=REPO, env=web_lab["env"],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    static = (tmp_path / "report" / "index.html").read_text()
    assert live == re.search(r"<body>(.*)</body>", static, re.S).group(1)
    # /metrics, served by the page, parsed by prometheus_client's own parser: the run counted
    assert runs_by_verdict(b).get("pass", 0) == runs_before.get("pass", 0) + 1


def runs_by_verdict(b) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    status, text, headers = b.request("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain"), headers
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hosts = {s.labels["host"]: s.value for s in families["farm_host_up"].samples}
    assert hosts == {HOST: 1.0}
    return {s.labels["verdict"]: s.value for s in families["farm_runs"].samples if s.name == "farm_runs_total"}


@pytest.mark.slow
def test_the_queues_page_counts_what_waits_on_each_queue(web_lab):
    _, body, _ = Browser(web_lab["base"]).request("/queues")
    for queue in (f"host.{HOST}", "vendor.amd", "results", "control", "lab"):
        row = re.search(rf'<tr data-queue="{re.escape(queue)}">(.*?)</tr>', body, re.S)
        assert row and re.search(r'class="depth">\d+<', row.group(1)), body[-3000:]
    assert re.search(rf'data-queue="host.{HOST}">.*?1 host<', body, re.S)


@pytest.mark.slow
def test_a_forged_post_without_the_csrf_token_changes_nothing(web_lab):
    b = Browser(web_lab["base"])
    status, confirm, _ = b.request(f"/hosts/{HOST}/quarantine")  # the confirmation, with the token
    assert status == 200 and f"Yes, quarantine {HOST}" in confirm
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm).group(1)
    forged = Browser(web_lab["base"])  # another site's form: no cookie of ours, no token
    assert forged.request(f"/hosts/{HOST}/quarantine", {})[0] == 403
    assert forged.request(f"/hosts/{HOST}/quarantine", {"csrf": token})[0] == 403  # a token without its cookie
    assert b.request(f"/hosts/{HOST}/quarantine", {"csrf": "0" * 64})[0] == 403    # the cookie, a wrong token
    assert health_of(web_lab) == "healthy"
    # the same POST with the token: done, and in the host's history
    status, _, headers = b.request(f"/hosts/{HOST}/quarantine", {"csrf": token})
    assert (status, headers["location"]) == (303, "/hosts")
    assert health_of(web_lab) == "quarantined"
    assert b.request(f"/hosts/{HOST}/release", {"csrf": token})[0] == 303
    assert health_of(web_lab) == "healthy"
    _, hosts, _ = b.request("/hosts")
    history = re.search(r'<td class="history">(.*?)</td>', hosts, re.S).group(1)
    assert "healthy: released by an operator" in history and "quarantined: quarantined by an operator" in history
    # names the CLI refuses are refused here too, with its words
    cli = farm_hosts(web_lab, "--quarantine", "no-such-host")
    assert cli.returncode == 2 and "unknown host 'no-such-host'" in cli.stderr
    status, body, _ = b.request("/hosts/no-such-host/quarantine", {"csrf": token})
    assert status == 400 and "unknown host &#39;no-such-host&#39;" in body
    assert b.request(f"/hosts/{HOST}/delete", {"csrf": token})[0] == 400
    status, body, _ = b.request("/submit", {"csrf": token, "job": "../pyproject.toml"})
    assert status == 400 and "no job &#39;../pyproject.toml&#39;" in body
    assert b.request("/submissions/..%2Fx")[0] in (400, 404)
    # and a page asked for by another name (a DNS-rebinding site) is refused
    req = urllib.request.Request(web_lab["base"] + "/hosts", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400


@pytest.mark.root
@pytest.mark.slow
def test_beyond_loopback_the_page_wants_the_generated_password(web_lab, outside_host, tmp_path):
    state, port = tmp_path / "state", free_port()
    state.mkdir()
    env = {**web_lab["env"], "FARM_BROKER_URL": web_lab["broker"], "FARM_STATE_DIR": str(state)}
    log = tmp_path / "web.log"
    with open(log, "wb") as out:
        web = subprocess.Popen(farm_cmd("web", "--bind", outside_host.root_ip, "--port", str(port)), cwd=REPO,
                               env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://{outside_host.root_ip}:{port}"
        wait_for(lambda: "farm web: http" in log.read_text() or web.poll() is not None, "farm web to listen", 60)
        assert web.poll() is None, log.read_text()
        pw_file = state / "web.password"
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600 and str(pw_file) in log.read_text()
        password = pw_file.read_text().strip()
        assert password not in log.read_text()
        for path in ("/hosts", "/metrics", "/submit", "/triage/"):
            assert Browser(base).request(path)[0] == 401, path
        wrong = "Basic " + base64.b64encode(b"farm:not-it").decode()
        assert Browser(base, wrong).request("/hosts")[0] == 401
        good = Browser(base, "Basic " + base64.b64encode(f"farm:{password}".encode()).decode())
        status, body, _ = good.request("/hosts")
        assert status == 200 and f'data-host="{HOST}"' in body
        # and from the far side of the veth, the same
        probe = subprocess.run(["ip", "netns", "exec", outside_host.ns, "python3", "-c",
                                "import urllib.request, urllib.error, sys\n"
                                f"try: urllib.request.urlopen('{base}/hosts', timeout=10)\n"
                                "except urllib.error.HTTPError as e: print(e.code)"],
                               capture_output=True, text=True, timeout=60)
        assert probe.stdout.strip() == "401", probe.stderr
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=60)
