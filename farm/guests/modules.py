"""The kernel modules a guest's init loads, in dependency order.

Dependencies come from the kernel's modules.dep when the modules dir has
one (an installed kernel), else from each module's own `depends=` modinfo
(what depmod writes modules.dep from; Debian's packages ship no
modules.dep, their postinst makes it). Modules the kernel has built in
(modules.builtin) are skipped. Files may be .ko, .ko.xz or .ko.gz: the
initramfs gets them decompressed, since busybox insmod reads plain ELF only.
"""
from __future__ import annotations

import gzip
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

from farm.errors import InfraError

# What the guest's init needs: the PCI transport, the NIC, its shares' file system, overlayfs.
GUEST_MODULES = {"9p": ("virtio_pci", "virtio_net", "9pnet_virtio", "9p", "overlay"),
                 "virtiofs": ("virtio_pci", "virtio_net", "virtiofs", "overlay")}
_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def module_name(path: str) -> str:
    """"kernel/net/9p/9pnet_virtio.ko.xz" -> "9pnet_virtio" (dashes as underscores, as the kernel names them)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_module(path: Path) -> bytes:
    """The module's ELF image, decompressed."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise InfraError(f"{path.name}: zstd-compressed modules are not supported yet")
    return data


def _modinfo_depends(elf: bytes) -> list[str]:
    """The `depends=` entry of an ELF64 module's .modinfo section."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise InfraError("not an ELF64 kernel module")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:  # name offset, file offset, size
        name, = struct.unpack_from("<I", elf, shoff + i * shentsize)
        offset, size = struct.unpack_from("<QQ", elf, shoff + i * shentsize + 0x18)
        return name, offset, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if elf[stroff + name: elf.index(b"\0", stroff + name)] == b".modinfo":
            for entry in elf[offset: offset + size].split(b"\0"):
                if entry.startswith(b"depends="):
                    return [d for d in entry[len(b"depends="):].decode().split(",") if d]
            return []
    return []


@dataclass
class ModuleTree:
    """One kernel's lib/modules/<release> dir: its module files, built-ins and dependencies."""
    root: Path

    def __post_init__(self) -> None:
        self.files = {module_name(p.name): p for p in self.root.rglob("*.ko*") if p.name.endswith(_SUFFIXES)}
        builtin = self.root / "modules.builtin"
        self.builtin = {module_name(ln) for ln in builtin.read_text().split()} if builtin.exists() else set()
        self._deps: dict[str, list[str]] = {}
        dep_file = self.root / "modules.dep"
        if dep_file.exists():
            for line in dep_file.read_text().splitlines():
                path, sep, deps = line.partition(":")
                if sep:
                    self._deps[module_name(path)] = [module_name(d) for d in deps.split()]

    def loadable(self, name: str) -> bool:
        """Built in, or a module file of this kernel."""
        return name in self.files or name in self.builtin

    def depends(self, name: str) -> list[str]:
        if name not in self._deps:
            try:
                self._deps[name] = _modinfo_depends(read_module(self.files[name]))
            except (InfraError, struct.error, ValueError, lzma.LZMAError, OSError) as e:
                raise InfraError(f"cannot read the dependencies of {self.files[name]}: {e}") from None
        return self._deps[name]

    def closure(self, wanted) -> set[str]:
        """The module files of `wanted` and all they depend on, missing ones
        skipped: what a kernel package keeps once the lab has unpacked it, so
        that load_order() and transport() answer as on the whole package."""
        found: set[str] = set()
        todo = [n for n in wanted if n in self.files]
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo += [d for d in self.depends(name) if d in self.files]
        return found

    def load_order(self, wanted: tuple[str, ...]) -> list[str]:
        """The modules to insmod, every one after those it depends on;
        built-in ones left out. InfraError names a module this kernel lacks."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in seen:
                return
            seen.add(name)
            if name not in self.files:
                if name in self.builtin:
                    return
                why = f" (needed by {' <- '.join(reversed(chain))})" if chain else ""
                raise InfraError(f"the kernel in {self.root} has no module {name}, built in or loadable{why}: "
                                 "a virtual-lab guest needs virtio-pci, virtio-net, 9p or virtiofs, and overlayfs")
            for dep in self.depends(name):
                visit(dep, chain + (name,))
            order.append(name)

        for name in wanted:
            visit(name, ())
        return order
