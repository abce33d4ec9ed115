"""The virtual lab's kernel cache (farm/guests/kcache.py): Debian kernel
packages unpacked once, trimmed, shared with their initramfs images by every
run, capped in size (least recently used first, never one in use) and
trimmed by `farm gc`. The eviction logic runs on small fake entries; the
cache itself on the real default package (deb:linux-image-amd64)."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time

import pytest

from support import REPO, farm_cmd

MIB = 1 << 20
DAY = 86400


def fake_entry(state, package: str, mib: int, used_days_ago: float):
    """A complete cache entry of `mib` MiB on disk, last used that long ago."""
    from farm.guests.debs import TRIM
    d = state / "vlab" / "kernels" / package
    (d / "x").mkdir(parents=True)
    (d / "x" / "vmlinuz").write_bytes(b"\x01" * mib * MIB)
    (d / "ok").write_text(TRIM + "\n")
    (d / "used").touch()
    t = time.time() - used_days_ago * DAY
    os.utime(d / "used", (t, t))
    return d


def cached(state) -> list[str]:
    return sorted(p.name for p in (state / "vlab" / "kernels").iterdir() if not p.name.startswith("."))


def test_sizes_are_read_in_binary_units_and_nonsense_is_bad_input(monkeypatch, tmp_path):
    from farm.config import kernel_cache_max, parse_size
    from farm.errors import BadInput
    assert [parse_size(t, "x") for t in ("4G", "4GiB", "500M", "1.5g", "0", "123")] == \
        [4 << 30, 4 << 30, 500 * MIB, 3 << 29, 0, 123]
    for bad in ("", "-1", "4X", "lots", "4 GB more"):
        with pytest.raises(BadInput, match="is not a size"):
            parse_size(bad, "x")
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("FARM_KERNEL_CACHE_MAX", raising=False)
    assert kernel_cache_max() == 4 << 30  # the default
    (tmp_path / "config.yaml").write_text("kernel_cache_max: 2G\n")
    assert kernel_cache_max() == 2 << 30
    monkeypatch.setenv("FARM_KERNEL_CACHE_MAX", "300M")  # the environment beats the config
    assert kernel_cache_max() == 300 * MIB


def test_over_the_cap_the_least_recently_used_go_first_but_never_one_in_use(tmp_path, monkeypatch):
    from farm.guests import kcache
    from farm.guests.debs import TRIM
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    fake_entry(tmp_path, "k-oldest", 1, 30)
    in_use = fake_entry(tmp_path, "k-old-in-use", 1, 20)
    fake_entry(tmp_path, "k-old", 1, 10)
    fake_entry(tmp_path, "k-new", 1, 1)
    assert kcache.use(in_use, TRIM)  # this process uses it now, so it is the most recently used too
    removed, kept = kcache.evict(int(2.5 * MIB))
    assert [d.name for d in removed] == ["k-oldest", "k-old"]
    assert [(d.name, d.why) for d in kept] == [("k-new", "within the cap"), ("k-old-in-use", "within the cap")]
    assert cached(tmp_path) == ["k-new", "k-old-in-use"]
    removed, kept = kcache.evict(0)  # nothing fits: all but the one in use go
    assert [d.name for d in removed] == ["k-new"]
    assert [(d.name, d.why) for d in kept] == [("k-old-in-use", "in use (over the cap)")]
    assert not list((tmp_path / "vlab" / "kernels").glob(".trash-*"))


def test_unused_kernels_and_dead_unpacks_go_live_ones_stay(tmp_path, monkeypatch):
    from farm.guests import kcache
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    fake_entry(tmp_path, "k-stale", 1, 100)
    fake_entry(tmp_path, "k-fresh", 1, 2)
    kernels = tmp_path / "vlab" / "kernels"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (kernels / f".unpack-k-x-{dead.pid}-0123abcd").mkdir()  # its process is gone: a leftover
    (kernels / f".unpack-k-y-{os.getpid()}-0123abcd").mkdir()  # ours, still unpacking
    removed, kept = kcache.evict(None, unused_for_s=90 * DAY)
    assert [(d.name, d.why.split(" since ")[0]) for d in removed] == [("k-stale", "unused")]
    assert [d.name for d in kept] == ["k-fresh"]
    assert sorted(p.name for p in kernels.iterdir() if p.name.startswith(".u")) == \
        [f".unpack-k-y-{os.getpid()}-0123abcd"]


def _farm(tmp_path, *args, **env):
    full = {**os.environ, "FARM_STATE_DIR": str(tmp_path), **env}
    full.pop("FARM_CONFIG", None)
    return subprocess.run(farm_cmd(*args), cwd=REPO, env=full, capture_output=True, text=True, timeout=120)


def test_farm_gc_over_the_cap_removes_the_lru_kernel_and_keeps_the_newest_and_the_one_in_use(tmp_path, monkeypatch):
    from farm.guests import kcache
    from farm.guests.debs import TRIM
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    in_use = fake_entry(tmp_path, "k-in-use", 2, 60)
    fake_entry(tmp_path, "k-lru", 2, 50)
    fake_entry(tmp_path, "k-newest", 2, 1)
    kcache.use(in_use, TRIM)
    os.utime(in_use / "used", (time.time() - 60 * DAY,) * 2)  # least recently used, but this process holds it
    (tmp_path / "vlab" / "initramfs-6.1.0-old.cpio.gz").write_bytes(b"x")  # an older farm's loose image
    p = _farm(tmp_path, "gc", "--older-than", "90d", FARM_KERNEL_CACHE_MAX="5M")
    assert p.returncode == 0, p.stderr
    assert cached(tmp_path) == ["k-in-use", "k-newest"]
    lines = p.stdout.splitlines()
    assert "kernel cache" in lines[1] and "(cap 5.0 MiB): removed 1 (2.0 MiB), kept 2 (4.0 MiB)" in lines[1]
    assert any(ln.split()[:4] == ["removed", "k-lru", "2.0", "MiB"] and "over the cap" in ln for ln in lines)
    assert any(ln.split()[:2] == ["kept", "k-in-use"] and "in use (over the cap)" in ln for ln in lines)
    assert any(ln.split()[:2] == ["kept", "k-newest"] and "within the cap" in ln for ln in lines)
    assert (tmp_path / "vlab" / "initramfs-6.1.0-old.cpio.gz").exists()  # not older than 90 days
    p = _farm(tmp_path, "gc", "--older-than", "30d")  # the 4G default: age alone
    assert p.returncode == 0, p.stderr
    assert cached(tmp_path) == ["k-in-use", "k-newest"]  # the unused one is in use: kept
    assert "removed 0 (0 B), kept 2" in p.stdout
    assert any(ln.split()[:2] == ["kept", "k-in-use"] and "in use (unused since" in ln for ln in p.stdout.splitlines())


def test_a_bad_kernel_cache_max_is_exit_2_in_one_line_and_nothing_is_removed(tmp_path):
    fake_entry(tmp_path, "k-old", 1, 400)
    for env, what in (({"FARM_KERNEL_CACHE_MAX": "lots"}, "FARM_KERNEL_CACHE_MAX: 'lots'"),
                      ({"FARM_KERNEL_CACHE_MAX": "-4G"}, "FARM_KERNEL_CACHE_MAX: '-4G'")):
        p = _farm(tmp_path, "gc", "--older-than", "1d", **env)
        assert p.returncode == 2, p.stdout + p.stderr
        assert p.stderr.strip().splitlines() == [f"farm: {what} is not a size (use e.g. 4G, 500M, 0)"]
    (tmp_path / "config.yaml").write_text("kernel_cache_max: [4G]\n")
    p = _farm(tmp_path, "gc", "--older-than", "1d", FARM_CONFIG=str(tmp_path / "config.yaml"))
    assert p.returncode == 2 and "kernel_cache_max in the farm config" in p.stderr and "Traceback" not in p.stderr
    assert cached(tmp_path) == ["k-old"]


def test_a_bad_cap_is_refused_before_any_kernel_is_fetched(tmp_path, monkeypatch):
    from farm.errors import BadInput
    from farm.guests.qemu import resolve_kernel
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FARM_KERNEL_CACHE_MAX", "4 gigs")
    with pytest.raises(BadInput, match="FARM_KERNEL_CACHE_MAX"):
        resolve_kernel()
    assert not (tmp_path / "vlab" / "kernels").exists()


RESOLVE = ("import os, sys; from farm.guests.qemu import resolve_kernel, initramfs; "
           "k = resolve_kernel(); p = initramfs(k); print(p, p.stat().st_mtime_ns, p.stat().st_ino)")


def _resolve_in_processes(state, n: int, **env) -> list[str]:
    """n processes resolving the default kernel and building its initramfs, all at once."""
    full = {**os.environ, "FARM_STATE_DIR": str(state), **env}
    procs = [subprocess.Popen([sys.executable, "-c", RESOLVE], cwd=REPO, env=full, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [out.strip() for out, _ in outs]


@pytest.mark.slow
def test_the_real_package_lands_once_trimmed_and_its_initramfs_is_built_once_and_shared(tmp_path):
    """Two runs fetching the default kernel at once into an empty cache: one
    entry, trimmed, one initramfs; a later run reuses both (same file,
    same mtime, no rebuild). Landing it evicts an older kernel over the cap,
    never itself, though it alone is over the cap."""
    from farm.guests.debs import GUEST_WANTED
    from farm.guests.modules import ModuleTree
    fake_entry(tmp_path, "k-older", 1, 5)
    first = _resolve_in_processes(tmp_path, 2, FARM_KERNEL_CACHE_MAX="1M")
    # the same image: each wrote a whole one of its own and renamed it into place, the last one stays
    assert len({line.split()[0] for line in first}) == 1, first
    path = first[0].split()[0]
    built = os.stat(path)
    [package] = cached(tmp_path)  # k-older evicted; the new one kept, in use as it landed
    entry = tmp_path / "vlab" / "kernels" / package
    assert package.startswith("linux-image-6.") and path.startswith(f"{entry}/initramfs-")
    assert not [p.name for p in (tmp_path / "vlab" / "kernels").iterdir() if p.name.startswith((".u", ".t"))]
    assert len(list(entry.glob("initramfs-*"))) == 1 and not list(entry.glob(".initramfs-*"))
    with gzip.open(path) as f:
        image = f.read()
    assert b"init\0" in image and b"modules/9p.ko\0" in image and image.endswith(b"TRAILER!!!\0" + b"\0" * 3)
    # trimmed: only the guest's modules and what they need, their lists, the image and the changelog
    modules = next(entry.glob("x/*lib/modules/*"))
    tree = ModuleTree(modules)
    assert set(tree.files) == tree.closure(GUEST_WANTED) and 10 < len(tree.files) < 40
    assert tree.load_order(("9p",))[-1] == "9p" and (modules / "modules.builtin").exists()
    assert next(entry.glob("x/boot/vmlinuz-*")) and next(entry.glob("x/usr/share/doc/*/changelog*"))
    from farm.guests.kcache import disk_usage
    assert disk_usage(entry) < 60 * MIB  # a 6.1 package unpacks to ~400 MB whole
    stamp = (entry / "used").stat().st_mtime
    time.sleep(0.05)
    [again] = _resolve_in_processes(tmp_path, 1)
    assert again == f"{path} {built.st_mtime_ns} {built.st_ino}"  # same path, mtime and inode: not rebuilt
    assert (entry / "used").stat().st_mtime > stamp  # its last use recorded for the LRU order


@pytest.mark.slow
def test_the_initramfs_is_keyed_by_its_content(tmp_path, monkeypatch):
    """Another init script, or a set-up fault's module order, makes another
    image next to it; the same inputs find the one already built."""
    import farm.guests.qemu as qemu
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    kernel = qemu.resolve_kernel()
    plain = qemu.initramfs(kernel)
    assert qemu.initramfs(kernel) == plain
    broken = qemu.initramfs(kernel, "module-order")
    assert broken != plain and broken.parent == plain.parent
    monkeypatch.setattr(qemu, "INIT", qemu.INIT.replace("farm-init: done", "farm-init: finished"))
    changed = qemu.initramfs(kernel)
    assert changed not in (plain, broken)
    assert b"farm-init: finished" in gzip.decompress(changed.read_bytes())
