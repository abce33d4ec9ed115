"""The triage report over the lab history (tests/results_lab.py): the JIT
listing normaliser and diff, the static HTML report (parsed, and rendered
by a real browser and its pixels counted) and the JUnit XML."""
from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from farm.report import html, jitdiff
from farm.report.junit import write_junit
from farm.report.signatures import find_signature, where
from farm.store import open_store
from farm.store.ingest import signature_key
from support.png import count_colours, paeth, png_pixels
from support.results_lab import FIXTURES, JOB, NEW, OLD, cell_history, errored, history, kernel_finding, lost

CHROMIUM = Path("/usr/bin/chromium")
NASTY = '<script>alert("x")</script> & <b>bold</b>'


def listing(result: str, name: str) -> str:
    r = json.loads((FIXTURES / "results" / f"{result}.json").read_text())
    return zlib.decompress(base64.b64decode(r["attachments"][name])).decode()


def outcome(r: dict) -> str:
    return "lost" if any(f["kind"] == "host-lost" for f in r["findings"]) else r["verdict"]


# -- jitdiff ----------------------------------------------------------------------

TINY_A = """<bpf_prog_0123456789abcdef_t0_0> at 0xffffffffc0000100, 20 bytes:
ffffffffc0000100:\t0f 1f 44 00 00       \tnopl   0x0(%rax,%rax,1)
ffffffffc0000105:\t48 bf 00 5a 77 0f 81 \tmovabs $0xffff88810f775a00,%rdi
ffffffffc000010c:\t88 ff ff 
ffffffffc000010f:\t77 01                \tja     0xffffffffc0000111\t<bpf_prog_0123456789abcdef_t0_0+0x11>
"""
TINY_B = """<bpf_prog_fedcba9876543210_t0_0> at 0xffffffffc0000200, 22 bytes:
ffffffffc0000200:\t0f 1f 44 00 00       \tnopl   0x0(%rax,%rax,1)
ffffffffc0000205:\t48 bf 00 40 3e 1f 81 \tmovabs $0xffff88811f3e4000,%rdi
ffffffffc000020c:\t88 ff ff 
ffffffffc000020f:\t31 c0                \txor    %eax,%eax
ffffffffc0000211:\t77 01                \tja     0xffffffffc0000213\t<bpf_prog_fedcba9876543210_t0_0+0x13>
"""


def test_normalise_makes_offsets_and_hides_addresses():
    assert jitdiff.normalise(TINY_A) == [
        "<bpf_prog_*_t0_0> 20 bytes",
        "+0x0:\tnopl 0x0(%rax,%rax,1)",
        "+0x5:\tmovabs $ADDR,%rdi",
        "+0xf:\tja +0x11",
    ]


def test_normalise_real_listing():
    lines = jitdiff.normalise(listing("pass", "0-chain-limit-direct/t0_0.S"))
    text = "\n".join(lines)
    assert lines[0] == "<bpf_prog_*_t0_0> 450 bytes"
    assert "ffffffffc0" not in text and "9984b8ce313a37d8" not in text
    assert "+0x17:\tja +0x1f" in lines
    assert "+0x37:\tmovabs $ADDR,%rdi" in lines
    # a small negative immediate is code, not an address
    assert "+0x33:\tadd $0xfffffffffffffff4,%rsi" in lines
    assert lines[-1] == "+0x1bd:\tjmp ADDR <retbleed_return_thunk>"


def test_diff_tiny_exact():
    assert jitdiff.diff(TINY_A, TINY_B, "a", "b") == [
        "--- a", "+++ b", "@@ -1,4 +1,5 @@",
        "-<bpf_prog_*_t0_0> 20 bytes", "+<bpf_prog_*_t0_0> 22 bytes",
        " +0x0:\tnopl 0x0(%rax,%rax,1)",
        " +0x5:\tmovabs $ADDR,%rdi",
        "-+0xf:\tja +0x11",
        "++0xf:\txor %eax,%eax", "++0x11:\tja +0x13",
    ]


def test_same_code_on_two_hosts_diffs_empty():
    """entry.S of the passing and the failing run: the same code loaded at
    other addresses, with other map pointers and another tag."""
    a, b = (listing(r, "0-chain-limit-direct/entry.S") for r in ("pass", "fail-tail-call-count"))
    assert a != b
    assert jitdiff.diff(a, b) == []


def test_diff_shows_the_changed_code():
    a, b = (listing(r, "0-chain-limit-direct/t0_0.S") for r in ("pass", "fail-tail-call-count"))
    d = jitdiff.diff(a, b)
    assert d[:2] == ["--- passing", "+++ failing"]
    assert "-+0x6c:\tje +0x10c" in d and "++0x6c:\tje +0x106" in d
    assert "-+0x106:\tcmp $0x3e,%rdi" in d and "++0x100:\tcmp $0x13,%rdi" in d
    # matched on instructions: the shifted tail of the program is context
    assert " +0x1bd:\tjmp ADDR <retbleed_return_thunk>" not in d
    assert [x for x in d if x.startswith("@@")] == [
        "@@ -1,4 +1,4 @@", "@@ -31,7 +31,7 @@", "@@ -65,19 +65,18 @@", "@@ -87,31 +86,37 @@"]


# -- the HTML report --------------------------------------------------------------


class Page(HTMLParser):
    """Matrix cells, links, table rows (the lab health's by host) and the
    text of <pre> blocks of one page."""

    def __init__(self, text: str):
        super().__init__()
        self.cells: dict[tuple[str, str, str], tuple[str, str]] = {}  # (class, kernel, cell) -> (class, text)
        self.links: list[str] = []
        self.pre: dict[str, str] = {}
        self.svgs: list[int] = []
        self.rows: list[list[str]] = []      # the <td> texts of each row that has some
        self.hosts: dict[str, list[str]] = {}  # the lab health's row of each host
        self._cell = self._pre = self._row = self._td = None
        self._text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr":
            self._row = (a.get("data-host"), [])
        if tag == "td":
            self._td = []
        if tag == "td" and "data-kernel" in a:
            self._cell, self._text = ((a["data-hw-class"], a["data-kernel"], a["data-cell"]), a["class"]), []
        elif tag == "pre":
            self._pre, self._text = a.get("class", ""), []
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "svg":
            self.svgs.append(0)
        elif tag == "circle":
            self.svgs[-1] += 1

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None:
            self._row[1].append("".join(self._td))
        if tag == "tr" and self._row and self._row[1]:
            host, cells = self._row
            self.rows.append(cells)
            if host:
                self.hosts[host] = cells
        if tag == "td" and self._cell:
            (key, cls), self._cell = self._cell, None
            self.cells[key] = (cls, "".join(self._text))
        elif tag == "pre":
            self.pre[self._pre], self._pre = "".join(self._text), None

    def handle_data(self, data):
        self._text.append(data)
        if self._td is not None:
            self._td.append(data)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The lab history in a store, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    store = open_store(f"sqlite:///{tmp}/farm.db")
    runs = history()
    store.add_many([(r, None, None) for r in runs])
    return store, runs, html.render(store, tmp / "out")


def test_index_matrix(lab):
    _, runs, index = lab
    page = Page(index.read_text())
    # no result of the history names a cell: each is of unknown cell, "-"
    assert set(page.cells) == {(r["host"]["hw_class"], r["host"]["kernel"], "-") for r in runs}
    status = {k[:2]: cls.split()[-1] for k, (cls, _) in page.cells.items()}
    old = {k: s for k, s in status.items() if k[1] == OLD}
    assert set(old.values()) == {"s-pass"}, old
    assert status[("amd-zen4", NEW)] == "s-fail"          # the regression
    assert status[("amd-zen2", NEW)] == "s-flaky"         # failed once, passed on retry
    assert status[("intel-icelake", NEW)] == "s-lost"
    assert status[("intel-skylake-sp", NEW)] == "s-fail"  # awaiting retry
    assert page.cells[("amd-zen2", NEW, "-")][1] == "1 fail 1 pass"
    assert page.cells[("amd-zen4", NEW, "-")][1] == "2/2 fail"
    assert page.cells[("amd-zen2", OLD, "-")][1] == "2/2 pass"
    text = index.read_text()
    kernels = [text.index(f"<th>{k}</th>") for k in (OLD, NEW)]
    assert kernels == sorted(kernels)  # kernel_key order, 6.1 before 6.6
    regressions = [r[1:6] for r in page.rows if r[0] == JOB and "→" in r[3]]
    assert regressions == [["amd-zen2", "-", f"{OLD} → {NEW}", "flaky", "zen2-a"],
                           ["amd-zen4", "-", f"{OLD} → {NEW}", "regression", "zen4-a"],
                           ["intel-skylake-sp", "-", f"{OLD} → {NEW}", "awaiting-retry", "skl-a"]]
    assert "http" not in text and "<script" not in text  # self-contained, no script


@pytest.fixture(scope="module")
def cell_lab(tmp_path_factory):
    """The cell lab (lfence fails on the new kernel, default passes) next to
    one run from before cells, and its report."""
    tmp = tmp_path_factory.mktemp("cells")
    store = open_store(f"sqlite:///{tmp}/farm.db")
    old = [r for r in history() if r["host"]["hostname"] == "skl-a" and r["host"]["kernel"] == OLD]
    runs = cell_history() + old
    store.add_many([(r, None, None) for r in runs])
    return store, runs, html.render(store, tmp / "out")


def test_index_matrix_has_a_row_per_cell(cell_lab):
    _, _, index = cell_lab
    page = Page(index.read_text())
    status = {k: cls.split()[-1] for k, (cls, _) in page.cells.items()}
    assert status == {**{(c, k, cell): "s-fail" if (k, cell) == (NEW, "lfence") else "s-pass"
                         for c in ("amd-zen4", "intel-icelake") for k in (OLD, NEW) for cell in ("default", "lfence")},
                      ("intel-skylake-sp", OLD, "-"): "s-pass", ("intel-skylake-sp", NEW, "-"): "s-none"}
    assert page.cells[("amd-zen4", NEW, "lfence")][1] == "2/2 fail"
    text = index.read_text()
    assert 'data-cell="lfence" title="0 pass, 2 fail, 0 lost, 0 error; indirect jump lfence, return srso"' in text
    assert "<th class=cell-name>-</th>" in text and "<th class=cell-name>default</th>" in text
    regressions = [r[1:5] for r in page.rows if r[0] == JOB and "→" in r[3]]
    assert regressions == [["amd-zen4", "lfence", f"{OLD} → {NEW}", "regression"],
                           ["intel-icelake", "lfence", f"{OLD} → {NEW}", "regression"]]
    sig = find_signature(cell_lab[0], "prog_array_map_poke_run")
    assert "<span class=split>fails only with lfence (4/4 runs; 0/4 with default), on both vendors: " \
        in (index.parent / f"sig-{sig.id}.html").read_text()


def test_junit_names_the_cell(cell_lab, tmp_path):
    _, runs, _ = cell_lab
    root = ET.parse(write_junit(cell_lab[0], tmp_path / "cells.xml")).getroot()
    failed = Counter((c.get("classname"), c.find("failure") is not None) for c in root.iter("testcase"))
    per_class = {(".default", False): 4, (".lfence", False): 2, (".lfence", True): 2}  # lfence fails on NEW
    assert failed == {**{(f"{JOB}.{cls}{cell}", fails): n for cls in ("amd-zen4", "intel-icelake")
                         for (cell, fails), n in per_class.items()},
                      (f"{JOB}.intel-skylake-sp.-", False): 1}  # the run from before cells
    names = {c.get("name").split()[-1]: c.get("name") for c in root.iter("testcase")}
    r = runs[-2]  # icx-b on the new kernel, in lfence
    assert names[r["run_id"]] == f"icx-b {NEW} lfence {r['run_id']}"


def test_throughput_plots(lab):
    _, runs, index = lab
    page = Page(index.read_text())
    measured = Counter(r["host"]["hw_class"] for r in runs if r["stats"]["tail_calls_per_s"] > 0)
    assert sorted(page.svgs) == sorted(measured.values())  # a chart per class, a dot per run
    assert index.read_text().count("<polyline") == len(measured)


def test_signature_pages(lab):
    store, runs, index = lab
    out = index.parent
    page = Page(index.read_text())
    sig_pages = {h for h in page.links if h.startswith("sig-")}
    kernel_sigs = {f["signature"] for r in runs for f in r["findings"] if f["kind"] != "host-lost"}
    assert len(sig_pages) == len(kernel_sigs) == 3
    assert sorted(sig_pages) == sorted(f"sig-{find_signature(store, t).id}.html" for t in kernel_sigs)
    for href in sig_pages:
        assert (out / href).is_file(), href

    sig = find_signature(store, "tail-call-count")
    assert f"sig-{sig.id}.html" in sig_pages
    text = (out / f"sig-{sig.id}.html").read_text()
    split = where(store, sig).split()
    assert split == "AMD only: 1/4 runs on amd-zen2, 0/4 on amd-zen4, 0/6 on intel-*"
    assert f"<span class=split>{split}</span>" in text
    sp = Page(text)
    assert "farm: run tailcall-subprog-stress-20261125T125015-69d2a6 start" in sp.pre["kmsg"]
    diff = sp.pre["jitdiff"].splitlines()
    assert "0-chain-limit-direct/t0_0" in text
    assert "++0x6c:\tje +0x106" in diff  # the failing host's code
    assert diff == jitdiff.diff(listing("pass", "0-chain-limit-direct/t0_0.S"),
                                listing("fail-tail-call-count", "0-chain-limit-direct/t0_0.S"),
                                "zen2-b 0-chain-limit-direct/t0_0", "zen2-a 0-chain-limit-direct/t0_0")

    bug = Page((out / f"sig-{find_signature(store, 'prog_array_map_poke_run').id}.html").read_text())
    assert bug.pre["kmsg"].startswith("kernel BUG at kernel/bpf/arraymap.c:1106!")
    assert "jitdiff" not in bug.pre  # the same program image on both hosts

    # a lost host is lab health: no signature page, nowhere among the signatures
    assert not (out / f"sig-{find_signature(store, 'host-lost').id}.html").exists()
    signatures = index.read_text().split("<h2>Signatures</h2>")[1].split("<h2>")[0]
    assert "host-lost" not in signatures and signatures.count("<tr>") == 1 + 3


def test_index_lab_health(lab):
    """The lost icx-a run is in the lab health section, by host, with its
    host-lost signature; every other host shows none."""
    store, runs, index = lab
    page = Page(index.read_text())
    lost = runs[-1]
    assert page.hosts["icx-a"] == [
        "intel-icelake", "icx-a", "3", "1", "0", "2026-09-08 00:15", "2026-09-08 00:15",
        f"1 lost: icx-a lost during {JOB}: heartbeat stopped (last 2026-09-08 00:15, {lost['run_id']}, "
        f"kernel {NEW})"]
    hosts = {r["host"]["hostname"] for r in runs}
    assert set(page.hosts) == hosts
    assert {h: row[3:6] for h, row in page.hosts.items() if h != "icx-a"} == \
        {h: ["0", "0", "–"] for h in hosts - {"icx-a"}}
    sig = find_signature(store, "host-lost")
    assert [f"#{sig.id}", "host-lost", "host-lost", "1", "2026-09-08 00:15"] in page.rows
    assert "lab health: 1 lost and 0 errored runs on 1 of 7 hosts." in index.read_text()


def test_lab_health_shows_errored_runs_with_their_error_text(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/farm.db")
    store.add_many([(r, None, None) for r in history()])
    at = datetime(2026, 9, 20, tzinfo=timezone.utc)
    store.add(errored("skl-a", NEW, at, 300, f"kmsg: /dev/kmsg reads end-of-file {NASTY}"))
    index = html.render(store, tmp_path / "out")
    text = index.read_text()
    assert "<script" not in text and "&lt;script&gt;" in text
    row = Page(text).hosts["skl-a"]
    assert row[:7] == ["intel-skylake-sp", "skl-a", "3", "0", "1", "2026-09-20 00:00", "2026-09-20 00:00"]
    assert row[7] == (f"1 error: kmsg: /dev/kmsg reads end-of-file {NASTY} (last 2026-09-20 00:00, "
                      f"{JOB}-{NEW}-skl-a-300, kernel {NEW})")
    # the errored run is no failure: skl-a's cell still counts one fail, and one error apart
    assert Page(text).cells[("intel-skylake-sp", NEW, "-")] == ("entry s-fail", "1 fail 1 error")


def test_lab_health_links_the_crash_a_lost_run_carried(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/farm.db")
    store.add_many([(r, None, None) for r in history()])
    store.add(lost("zen2-b", NEW, datetime(2026, 9, 20, tzinfo=timezone.utc), 301, "guest kernel died",
                   crash=[kernel_finding()]))
    text = html.render(store, tmp_path / "out").read_text()
    bug = find_signature(store, "prog_array_map_poke_run")
    row = Page(text).hosts["zen2-b"]
    assert row[3:5] == ["1", "0"] and row[7].endswith(f"kernel {NEW}); carried {bug.text}")
    zen2b = text.split('<tr data-host="zen2-b">')[1].split("</tr>")[0]
    assert f'carried <a href="sig-{bug.id}.html">{bug.text}</a>' in zen2b


def test_signature_page_states_identical_code(lab):
    store, _, index = lab
    sig = find_signature(store, "prog_array_map_poke_run")
    text = (index.parent / f"sig-{sig.id}.html").read_text()
    assert "<span class=split>AMD only: 2/4 runs on amd-zen4, 0/4 on amd-zen2, 0/6 on intel-*</span>" in text
    assert "emitted the same jited_sha256" in text


def test_database_text_is_escaped(tmp_path):
    """A signature, report and known-issue entry that are markup."""
    store = open_store(f"sqlite:///{tmp_path}/farm.db")
    odd = history()[7]
    odd["findings"] = [{"kind": "kernel-warning", "signature": NASTY, "summary": NASTY,
                        "detail": {"report": NASTY}}]
    store.add(odd)
    store.load_known([("<script>*", "javascript:alert(1)", "<i>note</i>")])
    index = html.render(store, tmp_path / "out")
    sig = find_signature(store, "alert")
    assert sig.status == "known"
    for path in (index, index.parent / f"sig-{sig.id}.html"):
        text = path.read_text()
        assert "<script" not in text and "<b>bold" not in text and "<i>note" not in text
        assert "&lt;script&gt;" in text
    assert 'href="javascript:' not in (index.parent / f"sig-{sig.id}.html").read_text()


# -- the report in a browser ------------------------------------------------------


def colour_areas(w: int, rows: list[bytes], colours: dict[str, tuple[int, int, int]], tol: int = 6,
                 min_px: int = 1000) -> dict[str, list[tuple[int, int, int, int, int]]]:
    """Each named colour's connected areas (4-neighbour) of at least min_px
    pixels, as sorted (x0, y0, x1, y1, pixels): one per matrix cell, since
    the cells' 1 px borders keep neighbours apart and their text only makes
    holes (and anti-aliased specks of a colour stay under min_px)."""
    seen = set()
    for row in rows:
        seen.update(row[i:i + 3] for i in range(0, len(row), 3))
    name_of = {rgb: name for rgb in seen for name, c in colours.items()
               if all(abs(v - cv) <= tol for v, cv in zip(rgb, c))}
    label = {}
    for y, row in enumerate(rows):
        for x in range(w):
            name = name_of.get(row[3 * x:3 * x + 3])
            if name:
                label[(x, y)] = name
    areas: dict[str, list] = {name: [] for name in colours}
    while label:
        (x, y), name = label.popitem()
        todo, box, n = [(x, y)], [x, y, x, y], 0
        while todo:
            px, py = todo.pop()
            n += 1
            box = [min(box[0], px), min(box[1], py), max(box[2], px), max(box[3], py)]
            for q in ((px + 1, py), (px - 1, py), (px, py + 1), (px, py - 1)):
                if label.get(q) == name:
                    del label[q]
                    todo.append(q)
        if n >= min_px:
            areas[name].append((*box, n))
    return {name: sorted(a) for name, a in areas.items()}


def test_colour_areas_find_each_cell_and_nothing_else():
    """Drawn here: two green cells behind a 1 px grey border, a red one with
    dark text in it, a red speck, a near-green cell (within tol) and no
    orange at all: a missing colour counts zero cells."""
    white, grey, ink = (255, 255, 255), (187, 187, 187), (34, 34, 34)
    green, red = html.COLOURS["pass"], html.COLOURS["fail"]
    img = [[white] * 130 for _ in range(40)]

    def fill(x0, y0, x1, y1, c):
        for y in range(y0, y1 + 1):
            img[y][x0:x1 + 1] = [c] * (x1 - x0 + 1)
    fill(0, 0, 39, 19, green)
    fill(40, 0, 40, 19, grey)
    fill(41, 0, 80, 19, green)
    fill(0, 21, 39, 39, red)
    fill(10, 25, 29, 30, ink)                       # the cell's text
    fill(100, 30, 102, 31, red)                     # a speck: no cell
    fill(90, 0, 129, 19, (50, 200, 60))             # green within tol 6
    rows = [bytes(v for px in row for v in px) for row in img]
    areas = colour_areas(130, rows, {k: html.COLOURS[k] for k in ("pass", "fail", "flaky")}, min_px=100)
    assert areas == {"pass": [(0, 0, 39, 19, 800), (41, 0, 80, 19, 800), (90, 0, 129, 19, 800)],
                     "fail": [(0, 21, 39, 39, 40 * 19 - 20 * 6)], "flaky": []}
    assert count_colours(rows, {"pass": green}) == {"pass": 3 * 800}
    assert count_colours(rows, {"pass": green}, tol=0) == {"pass": 2 * 800}


def test_png_decoder_roundtrip():
    """The decoder against a PNG encoded here, row y with filter y % 5."""
    w, h, bpp = 7, 10, 3
    rows = [bytes((x * 37 + y * 11) % 256 for x in range(w * bpp)) for y in range(h)]
    raw, prev = b"", bytes(w * bpp)
    for y, line in enumerate(rows):
        kind, out = y % 5, bytearray()
        for i, x in enumerate(line):
            a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
            out.append((x - [0, a, b, (a + b) // 2, paeth(a, b, c)][kind]) & 0xFF)
        raw += bytes([kind]) + out
        prev = line

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    assert png_pixels(png) == (w, h, rows)
    # the first pixel's colour, (0, 37, 74), occurs nowhere else in the image
    assert count_colours(rows, {"first": tuple(rows[0][:3])}, tol=0) == {"first": 1}


@pytest.mark.browser
@pytest.mark.slow
def test_screenshot_shows_the_colours(lab, tmp_path):
    """Each matrix cell is one area of its status colour in the rendered
    page: as many areas of each colour as cells of that status."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (Debian package chromium)")
    _, _, index = lab
    shot = tmp_path / "index.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
           f"--screenshot={shot}", index.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert shot.is_file(), done.stderr[-2000:]
    w, h, rows = png_pixels(shot.read_bytes())
    assert (w, h) == (1400, 1000)
    statuses = ("pass", "fail", "flaky", "lost", "error")
    cells = Counter(cls.split()[-1].removeprefix("s-") for cls, _ in Page(index.read_text()).cells.values())
    assert cells == {"pass": 4, "fail": 2, "flaky": 1, "lost": 1}  # no errored runs: no purple cell
    areas = colour_areas(w, rows, {k: html.COLOURS[k] for k in statuses})
    assert {k: len(areas[k]) for k in statuses} == {k: cells[k] for k in statuses}, areas
    boxes = [a for k in statuses for a in areas[k]]
    # whole cells: one row height, at least the cells' min-width, mostly colour (text makes holes)
    assert len({y1 - y0 for _, y0, _, y1, _ in boxes}) == 1, boxes
    for x0, y0, x1, y1, n in boxes:
        assert x1 - x0 + 1 >= 110 and n >= 0.7 * (x1 - x0 + 1) * (y1 - y0 + 1), boxes


# -- JUnit ------------------------------------------------------------------------


def test_junit_counts(lab, tmp_path):
    store, runs, _ = lab
    path = write_junit(store, tmp_path / "junit.xml")
    root = ET.parse(path).getroot()
    outcomes = Counter(outcome(r) for r in runs)
    assert outcomes == {"pass": 10, "fail": 4, "lost": 1}
    assert root.tag == "testsuites"
    for el in (root, root.find("testsuite")):
        assert int(el.get("tests")) == len(runs)
        assert int(el.get("failures")) == outcomes["fail"]
        assert int(el.get("errors")) == outcomes["lost"] + outcomes["error"]
    assert [s.get("name") for s in root.iter("testsuite")] == [JOB]
    cases = {c.get("name").split()[-1]: c for c in root.iter("testcase")}
    assert len(cases) == len(runs)
    for r in runs:
        case = cases[r["run_id"]]
        assert case.get("classname") == f"{JOB}.{r['host']['hw_class']}.-"  # the history predates cells
        assert case.get("name") == f"{r['host']['hostname']} {r['host']['kernel']} - {r['run_id']}"
        assert float(case.get("time")) == pytest.approx(r["duration_s"], abs=1e-3)
        failure, error = case.find("failure"), case.find("error")
        sigs = "; ".join(signature_key(f["signature"]) for f in r["findings"])
        assert (failure is not None) == (outcome(r) == "fail")
        assert (error is not None) == (outcome(r) in ("lost", "error"))
        if failure is not None:
            assert failure.get("message") == sigs
        if error is not None:
            assert error.get("message") == sigs == "host-lost"
    assert float(root.get("time")) == pytest.approx(sum(r["duration_s"] for r in runs), abs=0.01)


def test_junit_filters(lab, tmp_path):
    store, runs, _ = lab
    one = runs[7]  # zen4-a on the new kernel
    root = ET.parse(write_junit(store, tmp_path / "a.xml", submission=one["submission"])).getroot()
    assert [c.get("name").split()[-1] for c in root.iter("testcase")] == [one["run_id"]]
    assert root.get("failures") == "1"
    root = ET.parse(write_junit(store, tmp_path / "b.xml", job="no-such-job")).getroot()
    assert root.get("tests") == "0" and root.find("testsuite") is None
