"""Errors that end a command with one clear line instead of a traceback.

The CLI catches TlbprobeError subclasses, prints ``tlbprobe: <message>`` to stderr and
exits with the class's exit code. Anything else is a bug and keeps its traceback.
"""


class TlbprobeError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 1


class InputError(TlbprobeError):
    """Bad input: a malformed file, an option out of range, a foreign directory."""

    exit_code = 2


class PreflightError(TlbprobeError):
    """The host cannot run the job as asked (not root, too little memory, old kernel...)."""

    exit_code = 3


class WorkloadError(TlbprobeError):
    """The workload failed while running; the run directory is kept and marked incomplete."""

    exit_code = 4


class InternalError(TlbprobeError):
    """A bug: something tlbprobe did not expect. The message says where it happened and
    where the traceback was kept; the run directory is kept, marked incomplete."""

    exit_code = 70  # EX_SOFTWARE
