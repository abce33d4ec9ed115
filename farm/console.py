"""What `farm run` shows a person: a live progress line on a terminal
(nothing when stderr is not one) and a summary table at the end."""
from __future__ import annotations

import sys
import time

from rich.console import Console as RichConsole
from rich.table import Table

from farm.result import Result


def _rate(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


class Console:
    def __init__(self, stream=sys.stderr):
        self.live = stream.isatty()
        self.out = RichConsole(file=stream, highlight=False)
        self._last = None  # (elapsed, updates, verified) of the previous tick
        self._status = None
        self._t0 = time.monotonic()

    def start(self, spec) -> None:
        if self.live:
            self.out.print(f"[bold]{spec.name}[/]: {len(spec.topologies)} topologies, "
                           f"{spec.duration:g}s on CPUs {','.join(map(str, spec.cpus))}")

    def stage(self, text: str) -> None:
        if self.live:
            if self._last is not None:  # end the progress line first
                self.out.file.write("\n")
                self._last = None
            self.out.print(f"[dim]· {text}[/]")
        else:  # a log (CI, a guest's console): where a long run spends its time
            self.out.file.write(f"· [{time.monotonic() - self._t0:7.1f}s] {text}\n")
            self.out.file.flush()

    def progress(self, p) -> None:
        if not self.live:
            return
        prev = self._last or (0.0, 0, 0)
        dt = max(p.elapsed - prev[0], 1e-6)
        self._last = (p.elapsed, p.updates, p.verified)
        line = (f"\r{p.elapsed:6.1f}s  updates {_rate((p.updates - prev[1]) / dt)}/s  "
                f"tail calls {_rate((p.verified - prev[2]) / dt)}/s  "
                f"findings {p.problems}" + (f"  unjudged {p.unjudged}" if p.unjudged else ""))
        self.out.file.write(line.ljust(78))
        self.out.file.flush()

    def finish(self, result: Result, artifacts) -> None:
        if self.live and self._last is not None:
            self.out.file.write("\n")
            self._last = None
        h = result.host
        table = Table(title=f"{result.job} · {result.run_id}", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        colour = {"pass": "green", "fail": "red", "error": "yellow"}[result.verdict]
        table.add_row("verdict", f"[{colour}]{result.verdict}[/]" + (f" ({result.error})" if result.error else ""))
        table.add_row("host", f"{h['hostname']} {h['vendor']} {h['hw_class']} "
                              f"(f{h['family']} m{h['model']} s{h['stepping']}, ucode {h['microcode']})")
        table.add_row("kernel", f"{h['kernel']} · spectre_v2: {h['spectre_v2']}")
        if cell := h.get("cell"):  # schema 2: the mitigation cell and what its JIT listing proves
            table.add_row("cell", f"{cell['name']} · jump {cell['indirect_jump']} · ret {cell['return']}"
                                  + (" · not reached" if result.cell_miss else ""))
        s = result.stats
        table.add_row("updates", f"{s.updates:,} ({_rate(s.updates_per_s)}/s)")
        table.add_row("tail calls", f"{s.tail_calls_verified:,} verified ({_rate(s.tail_calls_per_s)}/s), "
                                    f"{s.runs:,} runs in {s.windows:,} windows"
                                    + (f", {s.windows_unjudged} unjudged" if s.windows_unjudged else ""))
        if result.unverified and result.unverified != result.error:  # a fail's short coverage, or an error's
            table.add_row("coverage", result.unverified)
        table.add_row("duration", f"{result.duration_s:.1f}s")
        table.add_row("artifacts", str(artifacts) if artifacts else "none (--no-artifacts)")
        self.out.print(table)
        if result.findings:
            ft = Table("kind", "signature", "cpu", "summary", title="findings", title_justify="left")
            for f in result.findings[:30]:
                ft.add_row(f.kind, f.signature, "" if f.cpu is None else str(f.cpu), f.summary[:120])
            self.out.print(ft)
            if len(result.findings) > 30:
                self.out.print(f"... and {len(result.findings) - 30} more in result.json")
