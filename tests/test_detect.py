"""The kernel crashes a job provokes must come back as findings: the log is
followed through /dev/kmsg while the job runs, each oops, BUG, WARNING,
lockup, stall or KASAN report in it becomes one Finding, and the same crash
carries the same signature whichever host, CPU, process or JIT image it hit.
The taint mask is read before and after, and new bits are a finding too.

The reports below are fixtures in the raw /dev/kmsg record format (one record
a line, dictionary lines led by a space), made after real x86-64 6.x reports;
the follower itself is tried on the live kernel of this machine."""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from support import wait_for
from farm.detect import kmsg as kmsg_mod
from farm.detect.kmsg import KmsgFollower, KmsgRecord, parse_record, parse_records, write_marker
from farm.detect.signature import REPORT_CAP, classify, normalise_function, normalise_line
from farm.detect.taint import read_taint, taint_finding, taint_letters
from farm.errors import InfraError
from farm.result import Finding

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kmsg"


def load(name: str) -> list[KmsgRecord]:
    return parse_records((FIXTURES / name).read_bytes())


def kernel(*lines: str, level: int = 4, seq0: int = 1) -> list[KmsgRecord]:
    """Kernel records (facility 0) for a report written inline."""
    return [KmsgRecord(seq0 + i, 1000 + i, level, 0, line) for i, line in enumerate(lines)]


# -- reading the records ------------------------------------------------------------------

def test_a_record_as_kmsg_hands_it_out():
    r = parse_record(b"6,185,180238,-;acpi PNP0A08:00: _OSC: OS supports [ExtendedConfig ASPM]\n"
                     b" SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n")
    assert r == KmsgRecord(seq=185, ts_us=180238, prio=6, facility=0,
                           text="acpi PNP0A08:00: _OSC: OS supports [ExtendedConfig ASPM]")


def test_a_user_record_keeps_its_facility_and_a_multi_line_printk_stays_one_record():
    r = parse_record(b"13,334,2345084076,-;farm line1\\x0aline2 back\\x5cslash \\x09tab \\xc3\\xa9\n")
    assert (r.facility, r.prio, r.seq) == (1, 5, 334)
    assert r.text == "farm line1\nline2 back\\slash \ttab \u00e9"


def test_extra_header_fields_are_tolerated_and_garbage_is_no_record():
    r = parse_record(b"4,12,345,-,caller=T42;WARNING: something\n")
    assert (r.seq, r.text) == (12, "WARNING: something")
    for raw in (b"", b"no header here\n", b"4,12;too few fields\n", b"x,12,345,-;bad prio\n"):
        assert parse_record(raw) is None


def test_a_saved_dump_reads_back_record_by_record():
    recs = load("noise.kmsg")
    assert [r.seq for r in recs] == list(range(recs[0].seq, recs[0].seq + len(recs)))
    assert recs[2].text == "virtio_net virtio2 eth0: link up"  # its dictionary lines dropped


# -- the crash reports -------------------------------------------------------------------

CRASHES = [
    # fixture, kind, signature, cpu
    ("pagefault-bpf-prog.kmsg", "kernel-oops", "BUG: unable to handle page fault in bpf_prog_*", 1),
    ("kernel-bug-arraymap.kmsg", "kernel-bug", "kernel BUG in prog_array_map_poke_run", 2),
    ("gpf-bpf-prog.kmsg", "kernel-oops", "general protection fault in bpf_prog_*", 0),
    ("warning-bpf-core.kmsg", "kernel-warning", "WARNING in bpf_prog_free", 1),
    ("softlockup-bpf-prog.kmsg", "lockup", "BUG: soft lockup in bpf_prog_*", 1),
    ("hardlockup.kmsg", "lockup", "hard LOCKUP", 2),
    ("rcu-stall-bpf-prog.kmsg", "lockup", "INFO: rcu detected stall in bpf_prog_*", 3),
    ("kasan-slab-uaf.kmsg", "kernel-bug", "KASAN: slab-use-after-free Read in prog_array_map_poke_run", 2),
]


@pytest.mark.parametrize("fixture,kind,signature,cpu", CRASHES, ids=[c[0].removesuffix(".kmsg") for c in CRASHES])
def test_each_crash_is_one_finding_of_the_right_kind_and_signature(fixture, kind, signature, cpu):
    findings = classify(load(fixture))
    assert len(findings) == 1, [f.signature for f in findings]
    f = findings[0]
    assert isinstance(f, Finding)
    assert (f.kind, f.signature, f.cpu) == (kind, signature, cpu)


def test_a_finding_carries_the_raw_header_the_report_and_where_it_was():
    recs = load("pagefault-bpf-prog.kmsg")
    [f] = classify(recs)
    assert f.summary == "BUG: unable to handle page fault for address: ffffc90000a3f000"
    assert f.detail["seq"] == recs[1].seq  # the header, after the job's start marker
    assert f.detail["rip"] == "0010:bpf_prog_1a2b3c4d5e6f7a8b_entry+0x4d/0x80"
    report = f.detail["report"].splitlines()
    assert report[0] == f.summary
    assert "Oops: Oops: 0000 [#1] SMP NOPTI" in report  # the die line is part of this oops, not another
    assert report[-1] == "---[ end trace 0000000000000000 ]---"  # the register dump repeated after it is not
    assert not any(line.startswith("farm:") for line in report)  # our markers are no kernel lines
    assert re.match(r"\d{4}-\d\d-\d\dT", f.at)


def test_kernel_bug_and_warning_keep_the_source_file_in_the_detail():
    [bug] = classify(load("kernel-bug-arraymap.kmsg"))
    [warn] = classify(load("warning-bpf-core.kmsg"))
    assert bug.detail["file"] == "kernel/bpf/arraymap.c:1106"
    assert warn.detail["file"] == "kernel/bpf/core.c:2345"


def test_a_kasan_report_runs_from_its_header_to_the_closing_rule():
    [f] = classify(load("kasan-slab-uaf.kmsg"))
    report = f.detail["report"].splitlines()
    assert report[0].startswith("BUG: KASAN: slab-use-after-free in prog_array_map_poke_run")
    assert "Freed by task 48213:" in report
    assert set(report[-1]) == {"="}
    assert f.detail["rip"] is None  # KASAN reports have no register dump; the function is in the header


def test_a_whole_session_of_crashes_gives_one_finding_per_report_in_log_order():
    records = [r for fixture, *_ in CRASHES for r in load(fixture)]
    findings = classify(records)
    assert [(f.kind, f.signature) for f in findings] == [(kind, sig) for _, kind, sig, _ in CRASHES]


# -- the same crash elsewhere ------------------------------------------------------------------

def test_host_b_hits_the_same_crashes_and_they_carry_the_same_signatures():
    """Host B: another machine, other CPUs, pids, addresses and program tags,
    a tainted kernel, the second oops since boot, and the newer WARNING format."""
    b = classify(load("host-b-session.kmsg"))
    assert [(f.kind, f.signature) for f in b] == [
        ("kernel-warning", "WARNING in bpf_prog_free"),
        ("kernel-oops", "BUG: unable to handle page fault in bpf_prog_*"),
        ("lockup", "BUG: soft lockup in bpf_prog_*"),
        ("lockup", "INFO: rcu detected stall in bpf_prog_*"),
    ]
    a = {f.signature for fixture, *_ in CRASHES for f in classify(load(fixture))}
    assert {f.signature for f in b} <= a
    assert [f.cpu for f in b] == [3, 3, 0, 0]


def _elsewhere(records: list[KmsgRecord]) -> list[KmsgRecord]:
    """The same report as another host would log it: every address, pid, CPU,
    program tag and offset different."""
    def shift_hex(m):
        return format((int(m.group(0), 16) + 0x1230) % (1 << 64), f"0{len(m.group(0))}x")

    def change(text: str) -> str:
        text = re.sub(r"bpf_prog_[0-9a-f]{16}", "bpf_prog_0123456789abcdef", text)
        text = re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+", "+0x3/0x9", text)
        text = re.sub(r"\b[0-9a-f]{16}\b", shift_hex, text)
        text = re.sub(r"\b(CPU[:#] ?|PID: |cpu )\d+", lambda m: m.group(1) + "7", text)
        text = re.sub(r"(farm-\w+)[:/]\d+", r"\1:99999", text)
        return text.replace("[#1]", "[#4]").replace("Not tainted", "Tainted: G        W")
    return [KmsgRecord(r.seq + 5000, r.ts_us + 10**9, r.prio, r.facility, change(r.text)) for r in records]


@pytest.mark.parametrize("fixture,kind,signature,cpu", CRASHES, ids=[c[0].removesuffix(".kmsg") for c in CRASHES])
def test_every_crash_keeps_its_signature_on_another_host(fixture, kind, signature, cpu):
    here = load(fixture)
    there = _elsewhere(here)
    assert [r.text for r in here] != [r.text for r in there]
    [f_here], [f_there] = classify(here), classify(there)
    assert f_here.signature == f_there.signature == signature
    assert f_there.cpu == 7


# -- what is not a crash ---------------------------------------------------------------------

def test_an_ordinary_log_gives_no_finding():
    recs = load("noise.kmsg")
    assert classify(recs) == []


def test_user_space_lines_that_look_like_crashes_are_not_taken_for_the_kernel():
    """noise.kmsg holds a "BUG: ..." and a "WARNING: ..." written by user space
    (facility 1), as anyone may write to /dev/kmsg: never a finding in a run."""
    recs = load("noise.kmsg")
    fake = [r for r in recs if r.facility == 1 and r.text.startswith(("BUG:", "WARNING:"))]
    assert len(fake) == 2
    assert classify(recs) == []
    assert len(classify(fake, kernel_only=False)) == 2  # read them as kernel lines and they would be


def test_a_warning_line_without_a_stack_is_no_report():
    assert classify(kernel("WARNING: the frobnicator is old", "random: crng init done")) == []


# -- header variants -----------------------------------------------------------------------

RIP = "RIP: 0010:bpf_prog_1a2b3c4d5e6f7a8b_t0_1+0x12/0x40"


@pytest.mark.parametrize("lines,kind,signature", [
    (["general protection fault: 0000 [#1] SMP PTI", "CPU: 0 PID: 1 Comm: x Not tainted 5.15.0 #1", RIP],
     "kernel-oops", "general protection fault in bpf_prog_*"),
    (["general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN",
      "KASAN: null-ptr-deref in range [0x0000000000000008-0x000000000000000f]", RIP],
     "kernel-oops", "general protection fault in bpf_prog_*"),
    (["Oops: 0002 [#1] SMP", RIP], "kernel-oops", "Oops in bpf_prog_*"),
    (["Oops: stack segment: 0000 [#1] PREEMPT SMP NOPTI", "RIP: 0010:__bpf_prog_run32+0x1d/0x40"],
     "kernel-oops", "stack segment in __bpf_prog_run32"),
    (["BUG: kernel NULL pointer dereference, address: 0000000000000008", "#PF: supervisor read access in kernel mode",
      "Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI", RIP],
     "kernel-oops", "BUG: kernel NULL pointer dereference in bpf_prog_*"),
    (["BUG: unable to handle page fault for address: ffffc90000a3f000"],
     "kernel-oops", "BUG: unable to handle page fault"),
    (["WARNING: CPU: 0 PID: 1 at bpf_prog_free.cold+0x1/0x2", RIP], "kernel-warning", "WARNING in bpf_prog_free"),
    (["WARNING: at bpf_arch_poke_desc_update+0x1a1/0x1d0, CPU#2: farm-writer/8123"],
     "kernel-warning", "WARNING in bpf_arch_poke_desc_update"),
    (["WARNING: suspicious RCU usage", "Call Trace:", " <TASK>", " dump_stack_lvl+0x1/0x2", " </TASK>"],
     "kernel-warning", "WARNING: suspicious RCU usage"),
    (["BUG: soft lockup - CPU#5 stuck for 23s! [swapper/5:0]"], "lockup", "BUG: soft lockup"),
    (["NMI watchdog: Watchdog detected hard LOCKUP on cpu 4", RIP], "lockup", "hard LOCKUP"),
    (["rcu: INFO: rcu_sched self-detected stall on CPU", "rcu: \t1-....: (1 ticks this GP)", RIP],
     "lockup", "INFO: rcu detected stall in bpf_prog_*"),
    (["rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-... } 21004 jiffies s: 29 root: 0x2/.",
      "NMI backtrace for cpu 1", "RIP: 0010:bpf_prog_1a2b3c4d5e6f7a8b+0x12/0x40"],
     "lockup", "INFO: rcu detected stall in bpf_prog_*"),
    (["INFO: task farm-writer:4242 blocked for more than 122 seconds.", "Call Trace:", " <TASK>",
      " __schedule+0x3a1/0xb70", " schedule+0x27/0xf0", " synchronize_rcu_expedited+0x1b2/0x2c0",
      " bpf_fd_array_map_update_elem+0xd1/0x1a0", " </TASK>"],
     "lockup", "INFO: task hung in synchronize_rcu_expedited"),
    (["BUG: KASAN: use-after-free in bpf_prog_array_map_poke_run.isra.0+0x1a/0x60",
      "Write of size 8 at addr ffff888012345678 by task farm-writer/1234"],
     "kernel-bug", "KASAN: use-after-free Write in bpf_prog_array_map_poke_run"),
    (["BUG: KASAN: double-free in kfree+0x10/0x20", "", "CPU: 1 PID: 2 Comm: x"],
     "kernel-bug", "KASAN: double-free in kfree"),
    (["UBSAN: array-index-out-of-bounds in kernel/bpf/arraymap.c:890:12", "index 33 is out of range for type 'void *[32]'",
      "Call Trace:", " <TASK>", " dump_stack_lvl+0x1/0x2", " ubsan_epilogue+0x5/0x2b",
      " __ubsan_handle_out_of_bounds+0xa6/0xe0", " bpf_fd_array_map_lookup_elem+0x7e/0x80", " </TASK>"],
     "kernel-bug", "UBSAN: array-index-out-of-bounds in bpf_fd_array_map_lookup_elem"),
    (["BUG: scheduling while atomic: farm-runner/4242/0x00000002", RIP],
     "kernel-bug", "BUG: scheduling while atomic in bpf_prog_*"),
    (["BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580",
      "RIP: 0010:0xffffffffc0201234"], "kernel-bug", "BUG: sleeping function called from invalid context"),
    (["kernel BUG at arch/x86/net/bpf_jit_comp.c:472!", "invalid opcode: 0000 [#1] PREEMPT SMP",
      "RIP: 0010:[<ffffffff8104a1b2>]  [<ffffffff8104a1b2>] bpf_arch_poke_desc_update+0x1a2/0x1d0"],
     "kernel-bug", "kernel BUG in bpf_arch_poke_desc_update"),
])
def test_header_variants(lines, kind, signature):
    [f] = classify(kernel(*lines))
    assert (f.kind, f.signature) == (kind, signature)


def test_a_second_die_line_after_the_end_of_an_oops_is_a_crash_of_its_own():
    recs = kernel("BUG: unable to handle page fault for address: ffffc90000a3f000", "Oops: Oops: 0000 [#1] SMP",
                  RIP, "---[ end trace 0000000000000000 ]---",
                  "Oops: general protection fault, probably for non-canonical address 0x1: 0000 [#2] SMP",
                  "RIP: 0010:prog_array_map_poke_run+0x1c9/0x1e0", "---[ end trace 0000000000000000 ]---")
    assert [f.signature for f in classify(recs)] == [
        "BUG: unable to handle page fault in bpf_prog_*", "general protection fault in prog_array_map_poke_run"]


def test_a_report_that_never_ends_is_capped():
    [f] = classify(kernel("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [farm:1]", RIP,
                          *[f" bpf_test_run+0x{i:x}/0x320" for i in range(500)]))
    assert len(f.detail["report"].splitlines()) == REPORT_CAP
    assert f.detail["truncated"] is True


def test_a_multi_line_record_is_read_line_by_line():
    recs = [KmsgRecord(7, 1, 4, 0, "WARNING: CPU: 2 PID: 9 at kernel/bpf/core.c:1 bpf_prog_free+0x1/0x2\n"
                                   "RIP: 0010:bpf_prog_free+0x1/0x2")]
    [f] = classify(recs)
    assert (f.signature, f.cpu, f.detail["rip"]) == ("WARNING in bpf_prog_free", 2, "0010:bpf_prog_free+0x1/0x2")


# -- normalisation ---------------------------------------------------------------------

@pytest.mark.parametrize("raw,clean", [
    ("bpf_prog_1a2b3c4d5e6f7a8b_entry+0x4d/0x80", "bpf_prog_*"),
    ("bpf_prog_1a2b3c4d5e6f7a8b+0x4d/0x80", "bpf_prog_*"),
    ("? bpf_prog_0badc0de0badc0de_t2_0+0x25/0x50", "bpf_prog_*"),
    ("bpf_prog_array_map_poke_run", "bpf_prog_array_map_poke_run"),  # a kernel function, not a tag
    ("bpf_trampoline_6442491234+0x4d/0x1000", "bpf_trampoline_*"),
    ("prog_array_map_poke_run+0x6b4/0x6e0", "prog_array_map_poke_run"),
    ("__htab_map_lookup_elem.cold+0x5/0x9", "__htab_map_lookup_elem"),
    ("bpf_map_put.isra.0+0x1/0x2", "bpf_map_put"),
    ("copy_map_value.constprop.0", "copy_map_value"),
    ("bpf_testmod_test_read+0x1c/0x80 [bpf_testmod]", "bpf_testmod_test_read"),
])
def test_normalise_function(raw, clean):
    assert normalise_function(raw) == clean


def test_normalise_line_takes_out_what_differs_between_hosts():
    a = normalise_line("[  123.456789] CPU: 1 UID: 0 PID: 48213 Comm: farm-runner Not tainted 6.18.44 #1 PREEMPT_DYNAMIC")
    b = normalise_line("CPU: 3 UID: 0 PID: 3958 Comm: farm-runner Tainted: G        W  OE       6.18.44 #1 PREEMPT_DYNAMIC")
    assert a == b == "CPU: N UID: N PID: N Comm: farm-runner 6.18.44 #1 PREEMPT_DYNAMIC"
    assert normalise_line("Tainted: [W]=WARN, [O]=OOT_MODULE") == ""
    assert (normalise_line("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [farm-runner:48213]")
            == normalise_line("watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [farm-runner:3961]")
            == "watchdog: BUG: soft lockup - CPU#N stuck for Ns! [farm-runner:N]")
    assert (normalise_line("Oops: Oops: 0000 [#2] SMP NOPTI") == normalise_line("Oops: Oops: 0000 [#1] SMP NOPTI")
            == "Oops: Oops: 0000 SMP NOPTI")
    assert (normalise_line("RIP: 0010:bpf_prog_1a2b3c4d5e6f7a8b_entry+0x4d/0x80")
            == normalise_line("RIP: 0010:bpf_prog_c0ffee0123456789_entry+0x51/0x84") == "RIP: 0010:bpf_prog_*")
    assert (normalise_line("Read of size 8 at addr ffff88810c4d2e18 by task farm-writer/48230")
            == "Read of size 8 at addr ADDR by task farm-writer/N")
    assert (normalise_line("WARNING: kernel/bpf/core.c:2345 at bpf_prog_free.isra.0+0x71/0x90, CPU#3: kworker/3:0/77")
            == "WARNING: kernel/bpf/core.c:2345 at bpf_prog_free, CPU#N: kworker/3:0/N")


# -- following the live kernel log ------------------------------------------------------

live = pytest.mark.skipif(os.geteuid() != 0, reason="reading and writing /dev/kmsg needs root")


def _texts(follower: KmsgFollower) -> list[str]:
    return [r.text for r in follower.records]


@live
@pytest.mark.root
def test_the_follower_sees_a_marker_written_into_the_kernel_log():
    marker = f"farm test-detect marker {uuid.uuid4().hex}"
    with KmsgFollower() as follower:
        write_marker(marker)
        wait_for(lambda: marker in _texts(follower), "the marker to come through /dev/kmsg", deadline_s=10)
        [rec] = [r for r in follower.records if r.text == marker]
        assert (rec.facility, rec.prio) == (1, 5)  # user space, notice: never taken for a kernel report
    assert not follower.running
    assert follower.error is None and follower.lost == 0
    assert classify(follower.records) == []


@live
@pytest.mark.root
def test_only_records_logged_after_start_are_seen():
    before, after = (f"farm test-detect {w} {uuid.uuid4().hex}" for w in ("before", "after"))
    write_marker(before)
    with KmsgFollower() as follower:
        write_marker(after)
        wait_for(lambda: after in _texts(follower), "the marker written after start", deadline_s=10)
    assert before not in _texts(follower)
    seqs = [r.seq for r in follower.records]
    assert seqs == sorted(seqs)


@live
@pytest.mark.root
def test_a_marker_written_just_before_stop_is_not_lost():
    """The engine writes its end marker and stops the follower: stop() reads
    what is left first."""
    follower = KmsgFollower().start()
    marker = f"farm test-detect end {uuid.uuid4().hex}"
    write_marker(marker)
    follower.stop()
    assert marker in _texts(follower)
    follower.stop()  # twice is harmless


@live
@pytest.mark.root
def test_a_multi_line_marker_comes_back_as_one_record():
    marker = f"farm test-detect first {uuid.uuid4().hex}\nsecond line"
    with KmsgFollower() as follower:
        write_marker(marker)
        wait_for(lambda: marker in _texts(follower), "the two-line marker", deadline_s=10)


def test_a_missing_kmsg_is_an_infra_error(tmp_path):
    with pytest.raises(InfraError, match="cannot open"):
        KmsgFollower(path=str(tmp_path / "no-kmsg")).start()
    with pytest.raises(InfraError, match="cannot open"):
        write_marker("x", path=str(tmp_path / "no-kmsg"))


def test_records_overwritten_before_they_were_read_are_counted(monkeypatch):
    """A reader the ring buffer overtook gets EPIPE, then the oldest record
    still held: the jump in sequence numbers is the count of records lost."""
    script = [b"6,10,1,-;one\n", b"6,11,2,-;two\n", BrokenPipeError(), b"6,40,3,-;after the overrun\n",
              BlockingIOError()]
    follower = KmsgFollower()
    follower._fd = -42  # never a real descriptor: all its reads come from the script
    real_read = os.read

    def fake_read(fd, n):
        if fd != -42:
            return real_read(fd, n)
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item
    monkeypatch.setattr(kmsg_mod.os, "read", fake_read)
    follower._drain()
    assert [r.text for r in follower.records] == ["one", "two", "after the overrun"]
    assert (follower.overruns, follower.lost, follower.gaps) == (1, 28, [(12, 39)])


@pytest.mark.root
def test_write_marker_refuses_what_the_kernel_would_refuse():
    with pytest.raises(ValueError):
        write_marker("x" * 2000)
    with pytest.raises(ValueError):
        write_marker("x", level=9)


# -- taint ------------------------------------------------------------------------------

def test_taint_letters_are_the_kernels():
    assert taint_letters(0) == ""
    assert taint_letters(1 << 9) == "W"
    assert taint_letters((1 << 7) | (1 << 9)) == "DW"
    assert taint_letters((1 << 0) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15)) == "POELK"
    assert taint_letters(1 << 25) == "#25"


def test_new_taint_bits_are_a_finding():
    before = (1 << 12) | (1 << 13)                    # OE: an out-of-tree unsigned module, before the run
    after = before | (1 << 7) | (1 << 9) | (1 << 14)  # the run: died, warned, soft-locked
    f = taint_finding(before, after)
    assert (f.kind, f.signature) == ("taint", "taint: D L W")
    assert f.detail["before"] == before and f.detail["after"] == after
    assert f.detail["new_flags"] == ["DIE", "WARN", "SOFTLOCKUP"]
    assert "[D]=DIE" in f.summary


def test_old_or_cleared_taint_is_no_finding():
    assert taint_finding(1 << 9, 1 << 9) is None
    assert taint_finding((1 << 9) | (1 << 12), 1 << 12) is None


def test_read_taint_reads_this_kernels_mask():
    mask = read_taint()
    assert isinstance(mask, int) and mask >= 0
    assert taint_finding(mask, mask) is None


def test_an_unreadable_taint_mask_is_an_infra_error(tmp_path):
    with pytest.raises(InfraError):
        read_taint(tmp_path / "nope")


def test_a_panic_on_a_guest_console_is_a_kernel_oops_with_a_stable_signature():
    from farm.guests.qemu import console_records
    text = (FIXTURES.parent / "console" / "sysrq-panic-6.1.txt").read_text()
    findings = classify(console_records(text))
    assert [(f.kind, f.signature) for f in findings] == [
        ("kernel-oops", "kernel panic: sysrq triggered crash in sysrq_handle_crash")]
