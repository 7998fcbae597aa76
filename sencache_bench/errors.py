"""The one domain exception: the CLI prints it as a single line and exits with its code."""


class BenchError(Exception):
    """A user-facing error: `str(err)` says what is wrong and how to fix it."""

    exit_code = 1


class SpecError(BenchError):
    """A malformed or inconsistent experiment spec (exit code 2, nothing written)."""

    exit_code = 2


class PolicyError(BenchError):
    """A cache policy broke the framework's contract (e.g. reused a call with nothing cached): the policy's bug,
    reported as one line naming the policy, the branch and the call instead of a traceback from deep in a hook."""
