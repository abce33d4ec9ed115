"""Bad input to the three YAML readers (job specs, jobs/schedules.yaml, the lab
inventory) ends in BadInput with one clear line naming the file, never in
another exception; and the names they accept are safe to use as file, pin,
queue and result names.

Property tests (hypothesis) feed each reader random YAML-ish text and the
repository's own valid files mutated: values swapped for wrong types, huge
ints and strings, deep nesting, path-like and unprintable names. A reader
either returns a valid object or raises BadInput whose message is a single
printable line. Runs are derandomized (a fixed seed per test), so a failure
reproduces; hypothesis prints the falsifying example.

A few end-to-end checks run the real `farm` command on bad files: exit 2,
exactly one line on stderr, no traceback.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from farm.config import REPO
from farm.errors import BadInput
from farm.host_run import new_run_id
from farm.hosts.inventory import check_inventory, hosts_by_group, load_inventory
from farm.queue.schedules import beat_schedule, load_schedules
from farm.spec import JobSpec, load_spec, load_spec_text

SMOKE = yaml.safe_load((REPO / "jobs/smoke.yaml").read_text())
SCHEDULES = yaml.safe_load((REPO / "jobs/schedules.yaml").read_text())
LAB = yaml.safe_load((REPO / "inventory/lab.yml").read_text())

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
FEWER = settings(PROPERTY, max_examples=100)

# --- what every failure must look like ----------------------------------------


def one_clear_line(err: BadInput, names: str) -> str:
    """The message: one printable line, naming `names` (the file), not a novel."""
    msg = str(err)
    assert msg, "an empty BadInput"
    assert msg.isprintable() and len(msg.splitlines()) == 1, f"not one printable line: {msg!r}"
    assert names in msg, f"{names!r} not named in {msg!r}"
    assert len(msg) <= 400 + 3 * len(names), f"{len(msg)} characters: {msg[:300]!r}..."
    return msg


def note_event(what: str) -> None:
    if currently_in_test_context():  # see --hypothesis-show-statistics
        event(what)


def outcome(fn, *args, names: str, **kwargs):
    """fn's value, or None after a BadInput that passes one_clear_line. Any
    other exception fails the test (hypothesis shows the input)."""
    try:
        value = fn(*args, **kwargs)
    except BadInput as e:
        note_event("refused")
        one_clear_line(e, names)
        return None
    note_event("accepted")
    return value


def one_path_component(name: str) -> bool:
    return (bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name
            and Path("base", name).parent == Path("base"))


# --- strategies -----------------------------------------------------------------

HUGE_INT = "__HUGE_INT__"  # replaced in the YAML text by an int of 5000 digits
DEEP = re.compile(r"__DEEP_(\d+)__")  # replaced by a flow list nested that deep

PATHLIKE = ["../../etc/passwd", "/etc/passwd", "a/b", "..", ".", "", " ", "a\x00b", "\x00",
            "name\nsecond line", "cr\rhere", "tab\there", "line\u2028sep", "nel\x85", "\x1b[31mred",
            "é-ünï", "名前", "emoji-\U0001f600", "-leading", ".hidden", "a" * 65, "C:\\x",
            "~root", "$(reboot)", "'; rm -rf / #", '"quoted"', "%s%n", "*", "a,b", "farm_nope",
            "\ufeffbom", "x" * 5000]


def nested_list(depth: int):
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


BAD_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**40, -1, 0, 1]),
    st.floats(),  # nan and inf included
    st.text(max_size=30), st.sampled_from(PATHLIKE),
    st.just("x" * 20_000),
    st.just(HUGE_INT),
    st.integers(2, 1200).map(lambda d: f"__DEEP_{d}__"),
    st.dates(), st.binary(max_size=8),
    st.lists(st.integers() | st.text(max_size=5) | st.sampled_from(PATHLIKE), max_size=4),
    st.dictionaries(st.text(max_size=8) | st.sampled_from(PATHLIKE),
                    st.integers() | st.none() | st.text(max_size=5), max_size=3),
    st.integers(1, 60).map(nested_list),
)
BAD_KEYS = st.one_of(st.sampled_from(PATHLIKE), st.text(max_size=12), st.integers(), st.none(),
                     st.booleans(), st.just(HUGE_INT), st.sampled_from(["all", "hosts", "vars", "children",
                                                                        "name", "job", "cron", "every"]))


def _mutate(draw, node):
    """node with one change somewhere inside it."""
    ops = ["replace"]
    if isinstance(node, dict) and node:
        ops += ["descend"] * 4 + ["drop", "rename", "add"]
    elif isinstance(node, list) and node:
        ops += ["descend"] * 4 + ["drop", "add"]
    op = draw(st.sampled_from(ops))
    if op == "replace":
        return draw(BAD_VALUES)
    if isinstance(node, dict):
        node, key = dict(node), draw(st.sampled_from(list(node)))
        if op == "descend":
            node[key] = _mutate(draw, node[key])
        elif op == "drop":
            del node[key]
        elif op == "rename":
            node[draw(BAD_KEYS)] = node.pop(key)
        else:
            node[draw(BAD_KEYS)] = draw(BAD_VALUES)
        return node
    node, i = list(node), draw(st.integers(0, len(node) - 1))
    if op == "descend":
        node[i] = _mutate(draw, node[i])
    elif op == "drop":
        del node[i]
    else:
        node.insert(i, draw(BAD_VALUES))
    return node


def to_text(doc, allow_unicode: bool) -> str:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=allow_unicode, width=10**9)
    text = text.replace(HUGE_INT, "1" * 5000)
    return DEEP.sub(lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)


@st.composite
def mutated(draw, doc) -> str:
    """A valid document with one to three things wrong, as YAML text."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        doc = _mutate(draw, doc)
    return to_text(doc, draw(st.booleans()))


TOKENS = ["a", "b", "x", ": ", ":", "- ", "-", "\n", "  ", "    ", "\t", "[", "]", "{", "}", ", ", "#",
          "&a ", "*a", "*b", "!!binary ", "!!python/object/apply:os.system ", "!!set ", "!!int ",
          "!!float ", "!!timestamp ", "!foo ", "? ", "'", '"', "|", ">", "%YAML 1.1\n", "---\n",
          "...\n", "<<: ", "~", "null", "true", "no", ".nan", "-.inf", "0x1F", "0o17", "1_000",
          "1:30:00", "2024-13-45", "2024-02-30 10:00:00", "0000-01-01", "1" * 5000, "1e400",
          "topologies", "name", "duration", "cpus", "writers", "ops", "all", "hosts", "vars",
          "children", "schedules", "job", "cron", "every", "farm_queues", "\x00", "\u2028", "é",
          "\ufeff", "\\", "\\x00", "../../etc/passwd", "smoke.yaml"]
YAMLISH = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=60).map("".join),
    # PyYAML recurses (about 500 levels is too deep) and is quadratic in flow nesting
    st.integers(1, 1200).map(lambda d: "a: " + "[" * d + "]" * d),
    st.integers(1, 1200).map(lambda d: "a:\n" + "- " * d + "1"),  # block sequences, compact
    st.integers(1, 1200).map(lambda d: "{a: " * d + "1" + "}" * d),
)


@st.composite
def spliced(draw, text: str) -> str:
    """A valid file with random YAML-ish tokens spliced in."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + "".join(draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4))) + text[at:]
    return text


# --- job specs (farm/spec.py) -----------------------------------------------------

def assert_valid_spec(spec: JobSpec) -> None:
    assert isinstance(spec, JobSpec) and spec.topologies
    run_id = new_run_id(spec.name)
    assert one_path_component(run_id), run_id  # artifacts/<run_id>, <state>/artifacts/<run_id>
    from farm.bpf.loader import FARM_PIN_ROOT
    from farm.bpf.pins import run_pin_dir
    assert run_pin_dir(run_id).parent == FARM_PIN_ROOT
    if spec.targets.hw_class is not None and spec.targets.any:
        assert one_path_component(f"sub-1.any-{spec.targets.hw_class}")  # its run id
    for host in spec.targets.hosts or ():
        assert one_path_component(f"sub-1.{host}")


def check_spec_text(text: str, elsewhere: bool = True, overrides: dict | None = None) -> None:
    spec = outcome(load_spec_text, text, "BAD.yaml", "bad", overrides, elsewhere, names="BAD.yaml")
    if spec is not None:
        assert_valid_spec(spec)


@pytest.mark.slow  # hundreds of generated inputs: the full suite runs these
@PROPERTY
@given(YAMLISH, st.booleans())
@example("a: " + "[" * 1500 + "]" * 1500, True)
@example("duration: " + "9" * 5000, True)
@example("topologies: [hierarchy]\nwhen: 2024-13-45\n", True)
@example("? [a, b]\n: 1\n", True)
@example("topologies: [hierarchy]\n\"a\\nb\": 1\n", True)
@example("topologies: [hierarchy]\n\"\\0\": 1\n", True)
@example("a: &a [*a]\n", True)
def test_spec_random_text(text, elsewhere):
    check_spec_text(text, elsewhere)


@pytest.mark.slow  # hundreds of generated inputs: the full suite runs these
@PROPERTY
@given(mutated(SMOKE), st.booleans())
def test_spec_mutated(text, elsewhere):
    check_spec_text(text, elsewhere)


@FEWER
@given(spliced((REPO / "jobs/smoke.yaml").read_text()))
def test_spec_spliced(text):
    check_spec_text(text)


TOPO = {"topologies": ["hierarchy"]}


@FEWER
@given(st.one_of(st.sampled_from(PATHLIKE), st.text(max_size=70)))
def test_spec_names_are_path_safe(name):
    for doc in ({**TOPO, "name": name}, {**TOPO, "targets": {"hw_class": name, "any": True}},
                {**TOPO, "targets": {"hosts": [name]}}):
        check_spec_text(yaml.safe_dump(doc))


@FEWER
@given(st.one_of(st.text(max_size=40), st.sampled_from(["0-99999999999", "1" * 5000, "0-3,6", "all", "-1"])),
       st.one_of(st.text(max_size=20), st.sampled_from(["1e400s", "9" * 400 + "d", "0s", "nan", "1.5h"])))
def test_spec_cli_overrides(cpus, duration):
    """`farm run --cpus ... --duration ...` go through the same validation."""
    check_spec_text(yaml.safe_dump(TOPO), elsewhere=False, overrides={"cpus": cpus})
    check_spec_text(yaml.safe_dump(TOPO), elsewhere=False, overrides={"duration": duration})


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-input")
    for name in ("smoke.yaml", "tailcall-subprog-stress.yaml", "health.yaml"):
        shutil.copy(REPO / "jobs" / name, d / name)
    return d


@FEWER
@given(st.text(st.characters(exclude_characters="/\x00"), min_size=1, max_size=60))
def test_spec_file_names(scratch, stem):
    """A job without a name takes its file's: any file name is refused or safe."""
    try:
        path = scratch / "names" / f"{stem}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(TOPO))
    except (OSError, UnicodeEncodeError):
        return  # a name this file system refuses
    try:
        spec = outcome(load_spec, path, names="/names/")
    finally:
        path.unlink()
    if spec is not None:
        assert_valid_spec(spec)


def written(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", ["directory", "missing", "nul-in-path", "not-utf8", "empty"])
def test_spec_unreadable_files(scratch, case):
    path = {"directory": lambda: scratch, "missing": lambda: scratch / "missing.yaml",
            "nul-in-path": lambda: Path(f"{scratch}/nul\x00.yaml"),
            "not-utf8": lambda: written(scratch / "latin1.yaml", b"name: caf\xe9\n"),
            "empty": lambda: written(scratch / "empty.yaml", b"")}[case]()
    with pytest.raises(BadInput) as e:
        load_spec(path)
    one_clear_line(e.value, str(scratch))


# --- schedules (farm/queue/schedules.py) --------------------------------------------

def check_schedules(scratch: Path, text: str) -> None:
    path = scratch / "schedules.yaml"
    path.write_text(text)
    entries = outcome(load_schedules, path, names=str(scratch))
    if entries is None:
        return
    for e in entries:
        sub_id = f"sched-{e['name']}-12345"  # fire()'s submission id
        assert one_path_component(f"{sub_id}.jsonl")  # <state>/results/<submission>.jsonl
        assert one_path_component(f"{sub_id}.some-host")  # a run id: <state>/artifacts/<run_id>
        assert e["name"].isprintable()
        t = e["targets"]
        assert isinstance(t.get("all", False), bool)
        assert isinstance(t.get("hosts", []), list) and all(isinstance(h, str) for h in t.get("hosts", []))
        assert isinstance(t.get("where", ""), str)
    beat_schedule(entries)  # what run_beat does next must not fail either


@pytest.mark.slow  # hundreds of generated inputs: the full suite runs these
@PROPERTY
@given(YAMLISH)
@example("schedules: [\n")
@example("schedules:\n- {name: a, job: smoke.yaml, cron: '0 0 * * *', targets: {where: 5}}\n")
@example("schedules:\n- {name: a, job: smoke.yaml, cron: ', * * * *'}\n")
@example("schedules:\n- {name: ../../x, job: smoke.yaml, every: 1h}\n")
@example("schedules:\n- {name: a, job: ../../../../../../etc/passwd, every: 1h}\n")
@example("schedules:\n- {name: a, job: /etc/hostname, every: 1h}\n")
def test_schedules_random_text(scratch, text):
    check_schedules(scratch, text)


@pytest.mark.slow  # hundreds of generated inputs: the full suite runs these
@PROPERTY
@given(mutated(SCHEDULES))
def test_schedules_mutated(scratch, text):
    check_schedules(scratch, text)


@FEWER
@given(spliced((REPO / "jobs/schedules.yaml").read_text()))
def test_schedules_spliced(scratch, text):
    check_schedules(scratch, text)


def test_schedules_cron_fields_are_cron_order(scratch):
    """minute hour day-of-month month day-of-week, as in crontab(5)."""
    path = scratch / "schedules.yaml"
    path.write_text(yaml.safe_dump({"schedules": [
        {"name": "weekly", "job": "smoke.yaml", "cron": "0 4 * * 6"},
        {"name": "new-year", "job": "smoke.yaml", "cron": "0 0 31 12 *"}]}))
    sched = beat_schedule(load_schedules(path))
    weekly, new_year = sched["weekly"]["schedule"], sched["new-year"]["schedule"]
    assert weekly.day_of_week == {6} and weekly.month_of_year == set(range(1, 13))
    assert new_year.day_of_month == {31} and new_year.month_of_year == {12}


def test_schedules_unreadable(scratch):
    for path in (scratch, scratch / "missing.yaml", Path(f"{scratch}/nul\x00.yaml")):
        with pytest.raises(BadInput) as e:
            load_schedules(path)
        one_clear_line(e.value, str(scratch))
    written(scratch / "latin1.yaml", b"schedules: [caf\xe9]\n")
    (scratch / "sched.yaml").write_text("schedules:\n- {name: a, job: latin1.yaml, every: 1h}\n")
    with pytest.raises(BadInput) as e:
        load_schedules(scratch / "sched.yaml")
    one_clear_line(e.value, str(scratch))


# --- the inventory (farm/hosts/inventory.py) ------------------------------------------

SAFE_VALUE = re.compile(r"[^\s'\"\\`$]+")


def check_inventory_text(scratch: Path, text: str) -> None:
    path = scratch / "lab.yml"
    path.write_text(text)
    hosts = outcome(check_inventory, path, names=str(path))
    if hosts is None:
        return
    assert all(v in ("", "intel", "amd") for v in hosts.values())
    # playbooks/collect-crash.yml fetches into <artifacts>/<inventory_hostname>/
    assert all(one_path_component(h) for h in hosts), sorted(hosts)
    groups, host_vars = hosts_by_group(load_inventory(path))
    assert all(one_path_component(g) for g in groups)
    for defs in host_vars.values():
        for v in defs:
            if "farm_hostname" in v:  # a registry name, a queue name, a run id's tail
                assert isinstance(v["farm_hostname"], str) and one_path_component(v["farm_hostname"])
                assert SAFE_VALUE.fullmatch(v["farm_hostname"])
            for key in ("farm_worker", "farm_crash_capture"):
                assert isinstance(v.get(key, True), bool)
            for key in ("farm_root", "farm_fstab", "farm_sysctl_file", "farm_broker_url"):
                # written into a shell line by playbooks/provision.yml
                assert key not in v or (isinstance(v[key], str) and SAFE_VALUE.fullmatch(v[key]))
            for q in v.get("farm_queues", []):  # joined with ',' into FARM_EXTRA_QUEUES
                assert SAFE_VALUE.fullmatch(q) and "," not in q


@pytest.mark.slow  # hundreds of generated inputs: the full suite runs these
@PROPERTY
@given(YAMLISH)
@example("all:\n  hosts: [a, b]\n")
@example("all:\n  children: [intel]\n")
@example("all:\n  hosts:\n    ? [a]\n    : 1\n")
@example("all: &g\n  children:\n    loop: *g\n")
@example("all:\n  hosts:\n    ../../etc/passwd:\n")
@example("all:\n  hosts:\n    a: {farm_hostname: \"x'; reboot; '\"}\n")
@example("all: {hosts: {a: 1, a: 2}}\n")
@example("all:\n  vars: {" + "1" * 5000 + ": 1}\n")
def test_inventory_random_text(scratch, text):
    check_inventory_text(scratch, text)


@pytest.mark.slow  # hundreds of generated inputs: the full suite runs these
@PROPERTY
@given(mutated(LAB))
def test_inventory_mutated(scratch, text):
    check_inventory_text(scratch, text)


@FEWER
@given(spliced((REPO / "inventory/lab.yml").read_text()))
def test_inventory_spliced(scratch, text):
    check_inventory_text(scratch, text)


@FEWER
@given(st.one_of(st.sampled_from(PATHLIKE), st.text(max_size=40)), st.sampled_from(["host", "group"]))
def test_inventory_names(scratch, name, kind):
    doc = copy.deepcopy(LAB)
    intel = doc["all"]["children"]["intel"]
    if kind == "host":
        intel["hosts"][name] = {"ansible_host": "192.0.2.99"}
    else:
        doc["all"]["children"][name] = {"hosts": {"extra-01": None}}
    check_inventory_text(scratch, to_text(doc, True))


def test_inventory_alias_bomb(scratch):
    """Groups shared through aliases: checked without walking every path."""
    lines = ["all:", "  children:", "    g0: &g0 {hosts: {h0: }}"]
    for i in range(1, 40):
        lines.append(f"    g{i}: &g{i} {{children: {{a{i}: *g{i - 1}, b{i}: *g{i - 1}}}}}")
    check_inventory_text(scratch, "\n".join(lines) + "\n")


def test_inventory_unreadable(scratch):
    written(scratch / "latin1.yml", b"all: {hosts: {caf\xe9: }}\n")
    for path in (scratch, scratch / "missing.yml", Path(f"{scratch}/nul\x00.yml"), scratch / "latin1.yml"):
        with pytest.raises(BadInput) as e:
            check_inventory(path)
        one_clear_line(e.value, str(scratch))


def test_the_repository_files_are_valid():
    assert load_spec(REPO / "jobs/smoke.yaml", elsewhere=True).name == "smoke"
    assert [e["name"] for e in load_schedules(REPO / "jobs/schedules.yaml")] == \
        [s["name"] for s in SCHEDULES["schedules"]]
    assert check_inventory(REPO / "inventory/lab.yml") == {
        "spr-01": "intel", "icx-01": "intel", "genoa-01": "amd", "rome-01": "amd"}


# --- end to end: the real `farm` command ---------------------------------------------

BAD_FILES = {
    "yaml": "a: [\n",
    "deep": "a: " + "[" * 1500 + "]" * 1500 + "\n",
    "huge-int": "duration: " + "9" * 5000 + "\ntopologies: [hierarchy]\n",
    "bad-date": "topologies: [hierarchy]\nnotes: 2024-13-45\n",
    "newline-key": 'topologies: [hierarchy]\n"two\\nlines": 1\n',
    "path-name": "name: ../../etc/passwd\ntopologies: [hierarchy]\n",
}
BAD_INVENTORIES = {
    "yaml": "all: {\n",
    "deep": "all: " + "[" * 1500 + "]" * 1500 + "\n",
    "hosts-list": "all:\n  hosts: [a, b]\n",
    "path-host": "all:\n  hosts:\n    ../../etc:\n",
    "newline-key": 'all:\n  vars: {"farm_x\\ny": 1}\n',
}
BAD_SCHEDULES = {
    "yaml": "schedules: [\n",
    "deep": "schedules: " + "[" * 1500 + "]" * 1500 + "\n",
    "path-name": "schedules:\n- {name: ../../x, job: smoke.yaml, every: 1h}\n",
    "where-int": "schedules:\n- {name: a, job: smoke.yaml, every: 1h, targets: {where: 5}}\n",
    "cron-parse": "schedules:\n- {name: a, job: smoke.yaml, cron: ', * * * *'}\n",
}
CASES = ([("run", k, v) for k, v in BAD_FILES.items()]
         + [("lab check-inventory", k, v) for k, v in BAD_INVENTORIES.items()]
         + [("beat", k, v) for k, v in BAD_SCHEDULES.items()])


def farm(scratch: Path, *args: str) -> subprocess.CompletedProcess:
    """The real command; a bad file is refused before any broker or state is touched."""
    env = {**os.environ, "FARM_BROKER_URL": "redis://127.0.0.1:1/0", "FARM_STATE_DIR": str(scratch / "state")}
    return subprocess.run([sys.executable, "-m", "farm.cli", *args], cwd=REPO, env=env,
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("command,case,text", CASES, ids=[f"{c.split()[-1]}-{k}" for c, k, _ in CASES])
def test_cli_bad_file_exits_2_with_one_line(scratch, command, case, text):
    path = scratch / f"cli-{case}.yaml"  # next to the job files a schedule names
    path.write_text(text)
    out = farm(scratch, *command.split(), str(path))
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2, (out.returncode, err[-2000:])
    assert "Traceback" not in err
    assert err.endswith("\n") and len(err.splitlines()) == 1, repr(err[:2000])
    assert err.startswith("farm: ") and str(path) in err, err
    assert out.stdout == b""


def test_cli_file_name_with_a_newline(scratch):
    path = scratch / "cli" / "two\nlines.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("topologies: [nope]\n")
    out = farm(scratch, "run", str(path))
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, repr(err)


def test_cli_unreadable_inventory(scratch):
    out = farm(scratch, "lab", "check-inventory", str(scratch))  # a directory
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, repr(err[-2000:])

