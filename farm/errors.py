"""The failure taxonomy, mapped onto the exit codes of every farm command.

BadInput: the user's spec or arguments are wrong (exit 2).
InfraError: the lab broke: a tool is missing, the kernel refused, a process died (exit 3).
Findings of the thing under test are not exceptions: they travel in the Result (exit 1).
"""

EXIT_PASS, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_INFRA = 0, 1, 2, 3


class FarmError(Exception):
    exit_code = EXIT_INFRA


class BadInput(FarmError):
    exit_code = EXIT_BAD_INPUT


class InfraError(FarmError):
    exit_code = EXIT_INFRA
