"""`farm lab ...`: the lab's machines. Real hosts through Ansible
(check-inventory, provision, facts, collect-crash, teardown; farm.hosts)
and virtual hosts as QEMU guests (kernels, run, up, status, down;
farm.guests)."""
from __future__ import annotations

import os
from pathlib import Path

from farm.errors import EXIT_PASS

DEFAULT_KERNEL = "deb:linux-image-amd64"
CPU_MODELS = ("Icelake-Server", "EPYC-Milan")  # farm lab up's two guests


def add_commands(sub) -> None:
    from farm.cli import Parser
    lab = sub.add_parser("lab", help="the lab's hosts (Ansible) and guests (QEMU)")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, parser_class=Parser)

    # real hosts, through Ansible
    ci = lab_sub.add_parser("check-inventory", help="validate an inventory")
    ci.add_argument("inventory", nargs="?", type=Path)
    ci.set_defaults(handler=_check_inventory)
    for name, text, handler in (("provision", "provision hosts (playbooks/provision.yml)", _provision),
                                ("facts", "collect facts into the host registry", _host_facts),
                                ("teardown", "undo provision", _teardown)):
        sp = lab_sub.add_parser(name, help=text)
        sp.add_argument("--inventory", type=Path)
        sp.add_argument("--limit", help="a host or group")
        sp.set_defaults(handler=handler)
    cc = lab_sub.add_parser("collect-crash", help="fetch pstore and the previous boot's log")
    cc.add_argument("host")
    cc.add_argument("--inventory", type=Path)
    cc.set_defaults(handler=_collect_crash)

    # virtual hosts: QEMU guests
    lu = lab_sub.add_parser("up", help="a virtual lab: QEMU guests each running a farm worker")
    lu.add_argument("--host", action="append", metavar="NAME:CPU_MODEL",
                    help="a guest (repeatable); default vm-intel:Icelake-Server and vm-amd:EPYC-Milan")
    _guest_args(lu)
    lu.add_argument("--inventory-out", type=Path, default=Path("inventory/virtual.yml"))
    lu.set_defaults(handler=_guests_up)
    lk = lab_sub.add_parser("kernels", help="the amd64 kernel images the package archive offers for guests")
    lk.add_argument("--json", action="store_true")
    lk.set_defaults(handler=_kernels)
    lab_sub.add_parser("status", help="the virtual lab's guests").set_defaults(handler=_guests_status)
    lab_sub.add_parser("down", help="stop the virtual lab").set_defaults(handler=_guests_down)
    lr = lab_sub.add_parser("run", help="run a job in a fresh QEMU guest of a CPU model")
    lr.add_argument("job")
    lr.add_argument("--cpu-model", required=True, help="a QEMU CPU model, e.g. EPYC-Milan, Icelake-Server")
    lr.add_argument("--duration")
    _guest_args(lr)
    lr.add_argument("--json", type=Path, metavar="PATH")
    lr.add_argument("--artifacts", type=Path, metavar="DIR")
    lr.add_argument("--no-store", action="store_true", help="keep the result out of the results database")
    lr.set_defaults(handler=_guest_run)
    lm = lab_sub.add_parser("matrix", help="jobs x CPU models x kernels x cells, one guest per model, kernel and "
                                           "cell running all its jobs, as many guests at once as fit")
    lm.add_argument("jobs", nargs="+", metavar="JOB")
    lm.add_argument("--cpu-models", default=",".join(CPU_MODELS), metavar="A,B",
                    help=f"QEMU CPU models (default {','.join(CPU_MODELS)})")
    lm.add_argument("--kernels", default=DEFAULT_KERNEL, metavar="deb:PKG,...", help=f"default {DEFAULT_KERNEL}")
    lm.add_argument("--cells", metavar="c1,c2", help="cells of jobs/cells.yaml (default: each job's "
                                                     "targets.cells, else default)")
    lm.add_argument("--duration", help="override every job's duration")
    lm.add_argument("--parallel", type=int, metavar="N", help="guests at once (default: as CPUs and memory allow)")
    lm.add_argument("--smp", type=int, default=2)
    lm.add_argument("--memory", type=int, default=2048, help="MB per guest")
    lm.add_argument("--json", type=Path, metavar="PATH", help="write every result, as a list")
    lm.add_argument("--artifacts", type=Path, metavar="DIR")
    lm.add_argument("--no-store", action="store_true", help="keep the results out of the results database")
    lm.set_defaults(handler=_guest_matrix)


def _guest_args(p) -> None:
    p.add_argument("--kernel", default=DEFAULT_KERNEL, help="deb:PACKAGE or a bzImage path")
    p.add_argument("--cell", metavar="NAME", help="a mitigation cell of jobs/cells.yaml (its boot arguments)")
    p.add_argument("--append", metavar="ARGS", help="more kernel boot arguments, e.g. 'spectre_v2=retpoline,lfence'")
    p.add_argument("--modules", help="with --kernel PATH: that kernel's lib/modules/<release> dir")
    p.add_argument("--smp", type=int, default=2)
    p.add_argument("--memory", type=int, default=2048, help="MB")


def say(line: str) -> None:
    print(line, flush=True)


def _inventory(path) -> Path:
    return Path(path or os.environ.get("FARM_INVENTORY") or "inventory/lab.yml")


def _check_inventory(args) -> int:
    from farm.hosts.inventory import check_inventory
    hosts = check_inventory(_inventory(args.inventory))
    for host, vendor in sorted(hosts.items()):
        say(f"{host:24} {vendor or '(no vendor group)'}")
    return EXIT_PASS


def _provision(args) -> int:
    from farm.hosts.provision import provision
    return provision(_inventory(args.inventory), args.limit, say)[0]


def _teardown(args) -> int:
    from farm.hosts.provision import teardown
    return teardown(_inventory(args.inventory), args.limit, say)[0]


def _host_facts(args) -> int:
    from farm.cli.queue import registry
    from farm.hosts.provision import collect_facts
    code, found = collect_facts(_inventory(args.inventory), args.limit, registry(), say)
    for host, f in sorted(found.items()):
        say(f"{host:24} {f['vendor']:13} {f['hw_class']:22} {f['kernel']:20} ucode {f['microcode']}")
    return code


def _collect_crash(args) -> int:
    from farm.hosts.provision import collect_crash
    code, path = collect_crash(_inventory(args.inventory), args.host, say)
    if code == EXIT_PASS:
        say(str(path))
    return code


def _guests_up(args) -> int:
    from farm.cells import boot_args
    from farm.guests.vlab import run_lab_up
    _, append, _ = boot_args(args.cell, args.append)
    return run_lab_up(args.host, args.kernel, args.smp, args.memory, args.inventory_out, say, args.modules, append)


def _kernels(args) -> int:
    import json

    from farm.guests.kernels import available_kernels
    from farm.guests.kcache import cached_size, human
    kernels = available_kernels(cached_size)
    if args.json:
        print(json.dumps([k.to_dict() for k in kernels], indent=2))
        return EXIT_PASS
    say(f"{'package (--kernel deb:PACKAGE)':48} {'upstream':10} {'version':22} cached")
    for k in kernels:
        say(f"{k.package:48} {k.upstream:10} {k.version:22} {human(k.cached_bytes) if k.cached else '-'}")
    return EXIT_PASS


def _guests_status(args) -> int:
    from farm.guests.vlab import lab_status
    return lab_status(say)


def _guests_down(args) -> int:
    from farm.guests.vlab import lab_down
    return lab_down(say)


def _guest_run(args) -> int:
    from farm.guests.vrun import lab_run
    return lab_run(Path(args.job), args.cpu_model, args.kernel, args.json, args.artifacts,
                   args.duration, args.smp, args.memory, say, args.modules, args.cell, args.append,
                   store=not args.no_store)


def _guest_matrix(args) -> int:
    from farm.guests.matrix import MatrixOptions, run_matrix_command
    return run_matrix_command(args.jobs, args.cpu_models, args.kernels, args.cells, MatrixOptions(
        duration=args.duration, parallel=args.parallel, smp=args.smp, memory_mb=args.memory,
        json_path=args.json, artifacts=args.artifacts, store=not args.no_store))
