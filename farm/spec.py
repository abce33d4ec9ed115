"""Job specs: the YAML in jobs/, validated into a JobSpec.

Every bad input becomes a BadInput naming the file, the field and what is
allowed, so `farm run` exits 2 with one clear line.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from farm.bpf.corpus import MAX_SLOTS, TOPOLOGIES
from farm.errors import BadInput, shown
from farm.gen.shape import MAX_PROGRAMS, MIN_PROGRAMS, Shape, generate
from farm.inputs import load_yaml, read_input

MAX_DURATION_S = 7 * 24 * 3600
GEN_PROGRAMS = 12  # a generated shape's size unless the job says otherwise
MAX_SEED = (1 << 63) - 1  # stored as an integer everywhere it goes
MAX_SEEDS = 256           # topologies one `seeds:` entry may expand into
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}
OPS = ("install", "replace", "delete")
# the default checks; `refuse` (every case of farm/detect/refuse.py, on every
# run) is opt-in only: most jobs do not want it
CHECKS = ("oracle", "kmsg", "taint")
# Job and schedule names end up in run ids, so in file, pin and queue names.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "letters, digits, '.', '_' and '-', at most 64, not starting with a symbol"
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
HW_CLASS = re.compile(r"[A-Za-z0-9*?\[][A-Za-z0-9_.*?!\[\]-]{0,63}")  # a class or a glob


def parse_duration(value) -> float:
    """'10s', '5m', '1.5h', 30 -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration like 10s, 5m or 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{shown(value)} is not a duration (use e.g. 10s, 5m, 1h)")
    if not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(f"{shown(value)} is out of range (more than 0, at most 7d)")
    return seconds


def available_cpus() -> set[int]:
    return set(os.sched_getaffinity(0))


def parse_cpus(value, check: bool = True) -> list[int]:
    """'all', '0-3,6', 2, [0, 1] -> sorted CPU numbers, each usable here
    (unless check is False: a controller validating a job for other hosts)."""
    have = available_cpus()
    if value in (None, "all"):
        return sorted(have) if check else []
    cpus: set[int] = set()
    if isinstance(value, bool):
        raise ValueError("'all', a list like '0-3,6', or a list of numbers")
    if isinstance(value, int):
        cpus = {value}
    elif isinstance(value, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        cpus = set(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*", value):
        for part in value.split(","):
            lo, _, hi = part.partition("-")
            lo_i, hi_i = int(lo), int(hi or lo)
            if hi_i < lo_i or hi_i - lo_i > 4096:
                raise ValueError(f"bad CPU range {shown(part.strip())}")
            cpus.update(range(lo_i, hi_i + 1))
    else:
        raise ValueError(f"{shown(value)}: use 'all', a list like '0-3,6', or a list of numbers")
    missing = sorted(cpus - have)
    if missing and check:
        raise ValueError(f"CPU {missing[0]} does not exist or is not usable here "
                         f"(this host has {_ranges(sorted(have))})")
    if not cpus:
        raise ValueError("no CPUs given")
    return sorted(cpus)


def _ranges(cpus: list[int]) -> str:
    out, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(f"{start}" if start == c else f"{start}-{c}")
            start = None
    return ",".join(out)


def _check_cpus(info: ValidationInfo) -> bool:
    return not (info.context or {}).get("elsewhere")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerateSpec(_Strict):
    """A generated tail-call shape (farm/gen/shape.py): the same seed and
    size give the same programs on every host."""
    seed: StrictInt = Field(ge=0, le=MAX_SEED)
    programs: StrictInt = Field(default=GEN_PROGRAMS, ge=MIN_PROGRAMS, le=MAX_PROGRAMS)
    # fentry/fexit trampolines on the shape (a kernel under lockdown refuses
    # them: the shape is then unsupported there, never a pass)
    hooks: StrictBool = False

    @property
    def label(self) -> str:
        """gen-<seed>, as findings, signatures and pin dirs name it; a size
        other than the default, or hooks, are part of the name (another shape)."""
        return (f"gen-{self.seed}" + (f"-p{self.programs}" if self.programs != GEN_PROGRAMS else "")
                + ("-hooks" if self.hooks else ""))

    def shape(self) -> Shape:
        return generate(self.seed, self.programs, self.hooks)

    def reproduce(self) -> dict:
        return {"seed": self.seed, "programs": self.programs, **({"hooks": True} if self.hooks else {})}


def expand_seeds(entry: dict) -> list[dict]:
    """{generate: {seeds: "0-9", programs: 12}} -> one generate entry per
    seed; any other entry as it is."""
    gen = entry.get("generate") if isinstance(entry, dict) else None
    if not isinstance(gen, dict) or "seeds" not in gen:
        return [entry]
    if "seed" in gen:
        raise ValueError("generate: give seed or seeds, not both")
    seeds, rest = gen["seeds"], {k: v for k, v in gen.items() if k != "seeds"}
    if isinstance(seeds, str) and (m := re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", seeds)):
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo or hi - lo >= MAX_SEEDS:
            raise ValueError(f"generate: seeds {shown(seeds)}: a range like 0-9 of at most {MAX_SEEDS} seeds")
        seeds = list(range(lo, hi + 1))
    if not (isinstance(seeds, list) and seeds and len(seeds) <= MAX_SEEDS
            and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise ValueError(f"generate: seeds {shown(seeds)}: a range like 0-9 or a list of seeds "
                         f"(at most {MAX_SEEDS})")
    return [{**{k: v for k, v in entry.items() if k != "generate"}, "generate": {**rest, "seed": x}}
            for x in seeds]


class TopologySpec(_Strict):
    name: str | None = None
    # instead of a corpus name: a generated shape (docs/jobs.md)
    generate: GenerateSpec | None = None
    slots: int = 1
    fault: str | None = Field(default=None, description="test-only: a corpus variant that misbehaves")
    # the job's own program for this topology, inline C (farm/bpf/custom.py);
    # a worker runs it only where its config allows custom programs
    source: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in TOPOLOGIES:
            raise ValueError(f"unknown topology {shown(v)} (allowed: {', '.join(TOPOLOGIES)})")
        return v

    @property
    def label(self) -> str:
        """How the topology is named in keys, pins and findings."""
        return self.generate.label if self.generate else self.name

    @model_validator(mode="after")
    def _fits(self) -> "TopologySpec":
        if self.generate is not None:
            given = sorted(self.model_fields_set & {"name", "slots", "fault", "source"})
            if given:
                raise ValueError(f"{', '.join(given)} cannot go with generate (a generated shape has its own "
                                 "programs and slots)")
            return self
        if self.name is None:
            raise ValueError("a topology needs a name (a corpus topology) or generate: {seed: N}")
        topo = TOPOLOGIES[self.name]
        top = MAX_SLOTS if topo.multi_slot else 1
        if not 1 <= self.slots <= top:
            raise ValueError(f"slots {self.slots} out of range for {self.name} (allowed: 1..{top})")
        if self.source is not None:
            from farm.bpf.custom import source_problem
            if self.fault is not None:
                raise ValueError("a custom source and a fault variant do not go together")
            if problem := source_problem(self.source):
                raise ValueError(f"source: {problem}")
        if self.fault is not None and self.fault not in topo.faults:
            allowed = ", ".join(topo.faults) or "none"
            raise ValueError(f"fault {shown(self.fault)} not available for {self.name} (allowed: {allowed})")
        return self


class WritersSpec(_Strict):
    cpus: list[int] | None = None
    ops: tuple[Literal["install", "replace", "delete"], ...] | dict[Literal["install", "replace", "delete"], int] = OPS
    rate: float = Field(default=0, ge=0, le=1e7, description="updates/s per writer; 0: full speed")

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, v, info: ValidationInfo):
        return None if v is None else parse_cpus(v, _check_cpus(info))

    @field_validator("ops")
    @classmethod
    def _ops(cls, v):
        if isinstance(v, dict):
            if any(not 0 <= w <= 1000 for w in v.values()):
                raise ValueError("weights are whole numbers from 0 to 1000")
            v = {op: w for op, w in v.items() if w}
        if not v:
            raise ValueError(f"at least one of {', '.join(OPS)}")
        if "install" not in v and "delete" in v:
            raise ValueError("delete without install would leave slots empty for good")
        return v if isinstance(v, dict) else tuple(dict.fromkeys(v))


class RunnersSpec(_Strict):
    cpus: list[int] | None = None

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, v, info: ValidationInfo):
        return None if v is None else parse_cpus(v, _check_cpus(info))


class TargetsSpec(_Strict):
    """Which hosts of a lab run the job (farm submit); fields combine with AND."""
    vendor: Literal["intel", "amd"] | None = None
    hw_class: str | None = Field(default=None, description="a class, or a glob like intel-*")
    model: int | None = None
    hosts: tuple[str, ...] | None = None
    all: bool = False
    any: bool = Field(default=False, description="one run on any host of hw_class will do")
    # mitigation cells of jobs/cells.yaml the job runs in (farm lab matrix), the
    # way hw_class names the hardware it runs on
    cells: tuple[str, ...] | None = None

    @field_validator("cells", mode="before")
    @classmethod
    def _cells(cls, v):
        if v is None:
            return v
        if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
            raise ValueError(f"{shown(v)}: a list of cell names like [default, \"off\"] "
                             "(quote off: YAML reads a bare off as false)")
        if not v:
            raise ValueError("a non-empty list of cell names (jobs/cells.yaml), or leave it out for default")
        from farm.cells import CELLS_FILE, load_cells
        known = load_cells()
        for name in v:
            if name not in known:
                raise ValueError(f"unknown cell {shown(name)} (known in {CELLS_FILE.name}: {', '.join(known)})")
        return tuple(dict.fromkeys(v))

    @field_validator("hw_class")
    @classmethod
    def _hw_class(cls, v: str | None) -> str | None:
        if v is not None and not HW_CLASS.fullmatch(v):  # it names a queue and a run id
            raise ValueError("a class like intel-icelake or a glob like intel-* (letters, digits, '.', '_', '-')")
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for host in v or ():
            if not HOST.fullmatch(host):
                raise ValueError(f"{shown(host)} is not a host name (letters, digits, '.', '_', '-')")
        return v

    @model_validator(mode="after")
    def _any_needs_class(self) -> "TargetsSpec":
        if self.any and not self.hw_class:
            raise ValueError("any: true needs hw_class (one task goes to that class's queue)")
        return self


class JobSpec(_Strict):
    name: str
    description: str = ""
    duration: float = 10.0
    cpus: list[int] = Field(default_factory=lambda: parse_cpus("all"))
    repeat: int = Field(default=20000, ge=1, le=10_000_000)
    topologies: tuple[TopologySpec, ...]
    writers: WritersSpec = WritersSpec()
    runners: RunnersSpec = RunnersSpec()
    checks: tuple[Literal["oracle", "kmsg", "taint", "refuse"], ...] = CHECKS
    targets: TargetsSpec = TargetsSpec()
    # the job may crash an unfixed kernel (farm/crashgate.py): run it anyway
    crash_ok: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.fullmatch(v):
            raise ValueError(NAME_RULE)
        return v

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v):
        return parse_duration(v)

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, v, info: ValidationInfo):
        return parse_cpus(v, _check_cpus(info))

    @field_validator("topologies", mode="before")
    @classmethod
    def _topologies(cls, v):
        if not isinstance(v, list) or not v:
            raise ValueError("a non-empty list of topology names, {name, slots, fault} or {generate: {seed}}")
        return [x for t in v for x in expand_seeds({"name": t} if isinstance(t, str) else t)]

    @property
    def writer_cpus(self) -> list[int]:
        return self.writers.cpus or self.cpus

    @property
    def runner_cpus(self) -> list[int]:
        return self.runners.cpus or self.cpus


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_fits(), TopologySpec]",):
            continue
        else:
            out += ("." if out else "") + (part if isinstance(part, str) and len(part) <= 60 else shown(part))
    return out or "(top level)"


def _message(err: dict) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return msg


def load_spec(path: str | Path, overrides: dict | None = None, elsewhere: bool = False) -> JobSpec:
    """Read and validate a job file; overrides (e.g. from the CLI) win.
    elsewhere: the job will run on other hosts, so CPUs are not checked here."""
    path = Path(path)
    return load_spec_text(read_input(path, "job file"), str(path), path.stem, overrides, elsewhere)


def load_spec_text(text: str, source: str, default_name: str, overrides: dict | None = None,
                   elsewhere: bool = False) -> JobSpec:
    """Validate a job given as YAML text; errors name `source`."""
    data = load_yaml(text, source)
    if not isinstance(data, dict):
        raise BadInput(f"{source}: a job is a YAML mapping with at least 'topologies'")
    data = {"name": default_name, **data, **(overrides or {})}
    try:
        return JobSpec.model_validate(data, context={"elsewhere": elsewhere})
    except ValidationError as e:
        err = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise BadInput(f"{source}: {_field_path(err['loc'])}: {_message(err)}{more}") from None
