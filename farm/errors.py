"""The failure taxonomy, mapped onto the exit codes of every farm command.

BadInput: the user's spec or arguments are wrong (exit 2).
InfraError: the lab broke: a tool is missing, the kernel refused, a process died (exit 3).
Findings of the thing under test are not exceptions: they travel in the Result (exit 1).
"""

EXIT_PASS, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_INFRA = 0, 1, 2, 3
# how much of a tool's own output an error line quotes (the whole of it goes to artifacts)
TOOL_OUTPUT_CHARS = 500
# a result's verdict as the exit code of the command that ran or followed it
VERDICT_EXIT = {"pass": EXIT_PASS, "fail": EXIT_FINDINGS, "error": EXIT_INFRA}


def one_line(text: str) -> str:
    """Text fit for one line of stderr: line breaks, NULs and other
    unprintable characters (from a file name or a YAML key) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def shown(value, limit: int = 60) -> str:
    """A user's value for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


class FarmError(Exception):
    exit_code = EXIT_INFRA


class BadInput(FarmError):
    """Its message is always one line (the CLI prints it as `farm: ...`)."""
    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str = ""):
        super().__init__(one_line(str(message)))


class InfraError(FarmError):
    exit_code = EXIT_INFRA
