"""What `farm lab matrix` shows a person: a live progress bar (guests booted,
jobs done, failures) on a terminal, plain lines otherwise (a CI log), and a
table of every run at the end."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

VERDICT_STYLE = {"pass": "green", "fail": "red", "error": "yellow"}


class MatrixDisplay:
    def __init__(self, stream=None):
        self.out = Console(file=stream or sys.stdout, highlight=False)
        self.live = self.out.file.isatty()
        self.progress = None
        self._seen_boot: set[int] = set()
        self._seen_done: set[tuple[int, int]] = set()

    def start(self, plans, slots: int) -> None:
        self.plans = plans
        jobs = sum(len(p.jobs) for p in plans)
        self.out.print(f"lab matrix: {jobs} runs in {len(plans)} guests, {slots} at a time", markup=False)
        if self.live:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[booted]}/{task.fields[guests]} guests booted, "
                                                "{task.fields[failed]} failed"),
                                     TimeElapsedColumn(), console=self.out)
            self.task = self.progress.add_task("jobs done", total=jobs, booted=0, guests=len(plans), failed=0)
            self.progress.start()

    def update(self, watches) -> None:
        """Called every half second with each guest's GuestWatch."""
        failed = 0
        for i, w in enumerate(watches):
            failed += sum(1 for code in w.done.values() if code)
            if w.booted and i not in self._seen_boot:
                self._seen_boot.add(i)
                self._line(f"booted  {self.plans[i].label}")
            for j, code in w.done.items():
                if (i, j) not in self._seen_done:
                    self._seen_done.add((i, j))
                    self._line(f"done    {self.plans[i].label} {self.plans[i].jobs[j].spec.name}: exit {code}")
        if self.progress:
            self.progress.update(self.task, completed=len(self._seen_done), booted=len(self._seen_boot),
                                 failed=failed)

    def guest_done(self, outcome) -> None:
        label = outcome.plan.label
        if outcome.setup_error:
            self._line(f"not set up {label}: {outcome.setup_error}", always=True)
        elif outcome.lost:
            lost = [j.job for j in outcome.jobs if j.result and j.result.get("verdict") != "pass"
                    and any(f["kind"] == "host-lost" for f in j.result["findings"])]
            self._line(f"lost    {label}: {', '.join(lost)} (console in {outcome.dir / 'console.log'})", always=True)
        else:
            self._line(f"off     {label}", always=False)

    def _line(self, text: str, always: bool = False) -> None:
        """Plain lines when not a terminal; on one, only what the bar cannot say."""
        if not self.live:
            self.out.print(text, markup=False)
        elif always:
            self.progress.console.print(text, markup=False)

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None


def print_summary(outcomes, artifacts) -> None:
    t = Table(title=f"lab matrix · artifacts in {artifacts}", title_justify="left")
    for col in ("cpu model", "kernel", "cell", "job", "verdict", "findings / why"):
        t.add_column(col)
    for o in outcomes:
        for j in o.jobs:
            r = j.result
            if r is None:
                t.add_row(o.plan.cpu_model, o.release, o.plan.cell, j.job, f"exit {j.exit_code}", escape(j.note[:100]))
                continue
            style = VERDICT_STYLE.get(r["verdict"], "")
            why = ", ".join(f["signature"] for f in r["findings"][:3]) or r.get("error", "")
            t.add_row(o.plan.cpu_model, o.release, o.plan.cell, j.job, f"[{style}]{r['verdict']}[/]", escape(why[:100]))
    Console(highlight=False).print(t)
