"""Jobs that bring their own BPF source for a topology: compiled in a temp
dir with limits, loaded through bpftool, judged by the same oracle; refused
when they reach for files, and on a worker unless its host allows them."""
from __future__ import annotations

import json

import pytest

from support import run_farm
from farm.bpf.corpus import PROGS_DIR

CORPUS = (PROGS_DIR / "direct-main.bpf.c").read_text()
FAST = {"duration": "1s", "writers": {"ops": ["replace"]}}


def run_custom(job_file, tmp_path, source, **extra):
    spec = {**FAST, "topologies": [{"name": "direct-main", "source": source}], **extra}
    res = tmp_path / "r.json"
    proc = run_farm("run", str(job_file(name="custom", **spec)), "--json", str(res),
                    "--artifacts", str(tmp_path / "art"))
    return proc, (json.loads(res.read_text()) if res.exists() else None)


@pytest.mark.root
@pytest.mark.slow
def test_a_job_s_own_copy_of_a_topology_runs_and_passes(job_file, tmp_path, no_leaks):
    proc, r = run_custom(job_file, tmp_path, CORPUS.replace("direct-main:", "my direct-main:"))
    assert proc.returncode == 0, proc.stderr + json.dumps(r and r["findings"])
    assert r["stats"]["tail_calls_verified"] > 0
    assert {p["name"] for p in r["programs"]} >= {"0-direct-main/entry", "0-direct-main/t0_2"}


@pytest.mark.root
@pytest.mark.slow
def test_a_custom_entry_that_never_tail_calls_is_caught_by_the_oracle(job_file, tmp_path, no_leaks):
    lazy = CORPUS.replace("tail_call_direct(skb, sc->slot);", "/* forgot the tail call */")
    assert lazy != CORPUS
    proc, r = run_custom(job_file, tmp_path, lazy)
    assert proc.returncode == 1, proc.stderr
    assert {f["kind"] for f in r["findings"]} == {"missed-tail-call"}


@pytest.mark.parametrize("source, says", [
    ('#include "farm.h"\n#include "/etc/passwd"\n', "#include '/etc/passwd' is not allowed"),
    ('#include "farm.h"\nasm(".incbin \\"/etc/passwd\\"");\n', "'asm' is not allowed"),
    ("int x;\n", 'it must #include "farm.h"'),
])
def test_a_source_that_reaches_for_files_is_bad_input(job_file, tmp_path, source, says):
    proc, r = run_custom(job_file, tmp_path, source)
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert r is None


@pytest.mark.root
@pytest.mark.slow
def test_an_include_hidden_by_a_macro_is_refused_by_the_preprocessor_check(job_file, tmp_path, no_leaks):
    hidden = '#include "farm.h"\n#define F "/etc/passwd"\n#/**/include F\n'
    proc, r = run_custom(job_file, tmp_path, hidden)
    assert proc.returncode == 1, proc.stderr
    [f] = r["findings"]
    assert f["kind"] == "load-error" and "includes a file outside the BPF headers" in f["summary"]
    assert "root:" not in json.dumps(r)  # nothing of the file came back


@pytest.mark.root
@pytest.mark.slow
def test_a_custom_source_that_does_not_compile_is_a_load_error(job_file, tmp_path, no_leaks):
    proc, r = run_custom(job_file, tmp_path, CORPUS + "\nthis is not C;\n")
    assert proc.returncode == 1, proc.stderr
    [f] = r["findings"]
    assert f["kind"] == "load-error" and "clang failed on the custom source" in f["summary"]
    assert "<src>" in f["detail"]["log"] and "/tmp/" not in f["detail"]["log"]


@pytest.mark.root
@pytest.mark.slow
def test_a_custom_source_with_programs_of_its_own_names_is_a_load_error(job_file, tmp_path, no_leaks):
    extra = CORPUS + '\nSEC("tc")\nint evil_name(struct __sk_buff *skb)\n{\n\treturn 0;\n}\n'
    proc, r = run_custom(job_file, tmp_path, extra)
    assert proc.returncode == 1, proc.stderr
    assert "unexpected program 'evil_name'" in r["findings"][0]["summary"]


@pytest.mark.root
@pytest.mark.slow
def test_a_worker_runs_custom_programs_only_where_its_config_allows(lab, job_file):
    lab.collector()
    lab.worker("strict")
    job = job_file(name="own", **FAST, topologies=[{"name": "direct-main", "source": CORPUS}])
    refused = lab.farm("submit", str(job), "--hosts", "strict", "--wait")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    [r] = lab.stored(refused.stdout.split()[0])
    assert r["verdict"] == "error" and "does not run custom programs" in r["error"]
    assert r["stats"]["runs"] == 0  # nothing was compiled or loaded
    (lab.state / "config.yaml").write_text("allow_custom_programs: true\n")
    allowed = lab.farm("submit", str(job), "--hosts", "strict", "--wait")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr + lab.log("worker-strict")
    [r] = lab.stored(allowed.stdout.split()[0])
    assert r["verdict"] == "pass" and r["stats"]["tail_calls_verified"] > 0


def test_clang_compiles_a_custom_source_under_the_resource_limits(monkeypatch):
    """With a 4 KiB file-size limit the object (about 17 KiB) cannot be
    written: the limits reach clang itself. Unlimited, the same source compiles
    (test above)."""
    import resource

    from farm.bpf import custom
    from farm.bpf.toolchain import LoadError
    monkeypatch.setitem(custom.LIMITS, resource.RLIMIT_FSIZE, 4096)
    with pytest.raises(LoadError, match="clang failed on the custom source"):
        with custom.custom_object("direct-main", CORPUS, ["-O2", "-g", "-target", "bpf", "-DFARM_SLOTS=1"]):
            pass
