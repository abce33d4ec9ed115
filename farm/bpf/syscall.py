"""A thin ctypes layer over bpf(2) for the hot path.

Attribute buffers are built once and reused, so a prog_array update or a
BPF_PROG_TEST_RUN costs one foreign call. errno becomes a BpfError that names
the command and the object.
"""
from __future__ import annotations

import ctypes
import errno as errno_mod
import os

from farm.errors import InfraError

SYS_BPF = 321  # x86-64
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM = 1, 2, 3
BPF_PROG_TEST_RUN, BPF_OBJ_GET, BPF_OBJ_GET_INFO_BY_FD = 10, 7, 15
BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID = 11, 13
BPF_OBJ_PIN, BPF_RAW_TRACEPOINT_OPEN, BPF_LINK_CREATE = 6, 17, 28
BPF_ANY = 0

_CMD_NAMES = {1: "MAP_LOOKUP_ELEM", 2: "MAP_UPDATE_ELEM", 3: "MAP_DELETE_ELEM",
              6: "OBJ_PIN", 7: "OBJ_GET", 17: "RAW_TRACEPOINT_OPEN", 28: "LINK_CREATE", 10: "PROG_TEST_RUN", 11: "PROG_GET_NEXT_ID",
              13: "PROG_GET_FD_BY_ID", 15: "OBJ_GET_INFO_BY_FD"}

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_uint)


class BpfError(InfraError):
    def __init__(self, cmd: int, err: int, what: str = ""):
        self.errno = err
        name = _CMD_NAMES.get(cmd, str(cmd))
        super().__init__(f"bpf({name}){' on ' + what if what else ''}: "
                         f"{errno_mod.errorcode.get(err, err)} ({os.strerror(err)})")


def bpf(cmd: int, attr: ctypes.Structure | ctypes.Array, what: str = "") -> int:
    ret = _syscall(SYS_BPF, cmd, ctypes.addressof(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise BpfError(cmd, ctypes.get_errno(), what)
    return ret


class ObjGetAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                ("file_flags", ctypes.c_uint32), ("path_fd", ctypes.c_int32)]


class MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class IdAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info, up to the fields farm reads."""
    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
    ]


def obj_get(path: str) -> int:
    """Open a pinned object; the caller owns the returned fd."""
    raw = ctypes.create_string_buffer(os.fsencode(path))
    attr = ObjGetAttr(pathname=ctypes.addressof(raw))
    return bpf(BPF_OBJ_GET, attr, path)


def obj_pin(fd: int, path: str) -> None:
    """Pin a program, map or link at path (on bpffs)."""
    raw = ctypes.create_string_buffer(os.fsencode(path))
    bpf(BPF_OBJ_PIN, ObjGetAttr(pathname=ctypes.addressof(raw), bpf_fd=fd), path)


class LinkCreateAttr(ctypes.Structure):
    """The head of bpf_attr.link_create, padded to what the kernel reads for
    tracing links (target_btf_id and cookie live in the union after it)."""
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("target_btf_id", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
                ("cookie", ctypes.c_uint64), ("_rest", ctypes.c_uint64 * 4)]


def link_create(prog_fd: int, attach_type: int, what: str, target: int = 0) -> int:
    """A BPF link for a tracing (fentry/fexit) or extension (freplace)
    program whose target was fixed at load time (target 0), or for one
    attached to what target names (an fd or an ifindex, by attach type);
    the caller owns the fd. The link is the attachment: closing its last
    fd (and unpinning it) detaches the program."""
    return bpf(BPF_LINK_CREATE, LinkCreateAttr(prog_fd=prog_fd, target_fd=target, attach_type=attach_type), what)


def prog_fd_by_id(prog_id: int) -> int:
    return bpf(BPF_PROG_GET_FD_BY_ID, IdAttr(id=prog_id), f"prog id {prog_id}")


def loaded_prog_ids() -> list[int]:
    """Ids of every BPF program loaded on this kernel."""
    ids, attr = [], IdAttr(id=0)
    while True:
        try:
            bpf(BPF_PROG_GET_NEXT_ID, attr)
        except BpfError as e:
            if e.errno == errno_mod.ENOENT:
                return ids
            raise
        ids.append(attr.next_id)
        attr.id = attr.next_id


class ProgArray:
    """Slot updates of one prog_array map with prebuilt attributes."""

    def __init__(self, map_fd: int, name: str = "prog_array"):
        self.fd, self.name = map_fd, name
        self._keys: dict[int, ctypes.c_uint32] = {}
        self._vals: dict[int, ctypes.c_uint32] = {}
        self._attrs: dict[tuple[int, int], MapElemAttr] = {}

    def _key(self, slot: int) -> ctypes.c_uint32:
        k = self._keys.get(slot)
        if k is None:
            k = self._keys[slot] = ctypes.c_uint32(slot)
        return k

    def update_attr(self, slot: int, prog_fd: int) -> MapElemAttr:
        """The attribute that installs prog_fd into slot; reusable."""
        a = self._attrs.get((slot, prog_fd))
        if a is None:
            v = self._vals.setdefault(prog_fd, ctypes.c_uint32(prog_fd))
            a = MapElemAttr(map_fd=self.fd, key=ctypes.addressof(self._key(slot)),
                            value=ctypes.addressof(v), flags=BPF_ANY)
            self._attrs[(slot, prog_fd)] = a
        return a

    def delete_attr(self, slot: int) -> MapElemAttr:
        a = self._attrs.get((slot, -1))
        if a is None:
            a = MapElemAttr(map_fd=self.fd, key=ctypes.addressof(self._key(slot)))
            self._attrs[(slot, -1)] = a
        return a

    def install(self, slot: int, prog_fd: int) -> None:
        bpf(BPF_MAP_UPDATE_ELEM, self.update_attr(slot, prog_fd), f"{self.name}[{slot}]")

    def delete(self, slot: int) -> None:
        """Empty the slot; an already empty slot is not an error."""
        try:
            bpf(BPF_MAP_DELETE_ELEM, self.delete_attr(slot), f"{self.name}[{slot}]")
        except BpfError as e:
            if e.errno != errno_mod.ENOENT:
                raise


def possible_cpus() -> int:
    """Per-CPU map values have one entry per possible CPU, not per online one."""
    text = open("/sys/devices/system/cpu/possible").read().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


class PerCpuCounters:
    """Reads key 0 of a per-CPU array of u64 counters, all CPUs in one call."""

    def __init__(self, map_fd: int, n_counters: int):
        self.n = n_counters
        self.ncpus = possible_cpus()
        self._buf = (ctypes.c_uint64 * (n_counters * self.ncpus))()
        self._key = ctypes.c_uint32(0)
        self._attr = MapElemAttr(map_fd=map_fd, key=ctypes.addressof(self._key),
                                 value=ctypes.addressof(self._buf))

    def read_cpu(self, cpu: int) -> list[int]:
        bpf(BPF_MAP_LOOKUP_ELEM, self._attr, "counters")
        return self._buf[cpu * self.n:(cpu + 1) * self.n]


class TestRun:
    """BPF_PROG_TEST_RUN of one program with a fixed packet and repeat."""

    PACKET = bytes(64)  # an all-zero frame longer than ETH_HLEN

    def __init__(self, prog_fd: int, repeat: int, name: str = "prog"):
        self.name = name
        self._data = ctypes.create_string_buffer(self.PACKET, len(self.PACKET))
        self._attr = TestRunAttr(prog_fd=prog_fd, data_size_in=len(self.PACKET),
                                 data_in=ctypes.addressof(self._data), repeat=repeat)
        self.repeat = repeat

    def set_repeat(self, repeat: int) -> None:
        self.repeat = self._attr.repeat = repeat

    def run(self) -> int:
        """Run `repeat` times on this CPU; returns the last retval.
        An interrupted run (EINTR) still ran part of the way: it returns -1."""
        a = self._attr
        a.duration = 0
        try:
            bpf(BPF_PROG_TEST_RUN, a, self.name)
        except BpfError as e:
            if e.errno == errno_mod.EINTR:
                return -1
            raise
        return a.retval


def prog_info(fd: int) -> tuple[ProgInfo, bytes, list[int], list[int]]:
    """Program info with its JIT image, the address of every function
    (main first, then subprogs) and each function's length in the image."""
    info = ProgInfo()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"prog fd {fd}")
    n_img, n_syms, n_lens = info.jited_prog_len, info.nr_jited_ksyms, info.nr_jited_func_lens
    img = (ctypes.c_uint8 * max(n_img, 1))()
    syms = (ctypes.c_uint64 * max(n_syms, 1))()
    lens = (ctypes.c_uint32 * max(n_lens, 1))()
    info2 = ProgInfo(jited_prog_len=n_img, jited_prog_insns=ctypes.addressof(img),
                     nr_jited_ksyms=n_syms, jited_ksyms=ctypes.addressof(syms),
                     nr_jited_func_lens=n_lens, jited_func_lens=ctypes.addressof(lens))
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info2), info=ctypes.addressof(info2))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"prog fd {fd}")
    return info2, bytes(img[:n_img]), list(syms[:n_syms]), list(lens[:n_lens])
