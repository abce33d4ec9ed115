"""Reading a user's file (a job, schedules, an inventory, known issues, the
farm config): whatever goes wrong is BadInput in one line naming the file."""
from __future__ import annotations

from pathlib import Path

import yaml

from farm.errors import BadInput


def read_input(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL in the path
        raise BadInput(f"{path}: cannot read: {e}") from None


def load_yaml(text: str, source: str, parse=yaml.safe_load):
    """parse(text), yaml.safe_load unless a caller brings its own safe
    parser; errors name `source`."""
    try:
        return parse(text)
    except BadInput as e:  # raised by a parser's own checks
        raise BadInput(f"{source}: {e}") from None
    except Exception as e:  # noqa: BLE001 (PyYAML's constructors raise anything; see yaml_problem)
        raise BadInput(f"{source}: {yaml_problem(e)}") from None


def yaml_problem(e: BaseException) -> str:
    """What yaml.safe_load ran into, in one line. PyYAML's own errors span
    lines; a scalar it cannot build (a date like 2024-13-45, an int of 5000
    digits, `!!int` on nothing) escapes as a ValueError, IndexError, KeyError...,
    and deep nesting as a RecursionError: load_yaml catches Exception around the parse."""
    if isinstance(e, RecursionError):
        return "not valid YAML: nested too deeply"
    mark = getattr(e, "problem_mark", None)
    line = f" (line {mark.line + 1})" if mark else ""
    problem = getattr(e, "problem", None) or getattr(e, "context", None)
    if not problem:
        why = "more than 4300 digits" if "integer string conversion" in str(e) else str(e) or type(e).__name__
        problem = f"a value that cannot be read ({why})"
    return f"not valid YAML{line}: {problem}"
