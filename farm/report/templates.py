"""The Jinja environment of the triage pages (farm/report/templates/): the
static report (farm report --html) and the live /triage/ pages both render
these, so the two never drift. Autoescape on: everything from the database
is text, never markup."""
from __future__ import annotations

from datetime import datetime
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from farm.report.cell_axis import cell_label
from farm.report.signatures import bisection_text


def when(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M}" if t else "–"


@cache
def env() -> Environment:
    # trim_blocks/lstrip_blocks: a block tag on its own line leaves no blank line behind;
    # StrictUndefined: a misspelt name is an error in the tests, not an empty cell.
    e = Environment(loader=PackageLoader("farm.report", "templates"), autoescape=select_autoescape(default=True),
                    trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
    e.filters.update(when=when, cell_label=cell_label, bisection_text=bisection_text)
    return e


def render(name: str, **context) -> str:
    return env().get_template(name).render(**context)
