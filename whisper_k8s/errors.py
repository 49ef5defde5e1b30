"""The one error contract of the CLI and libraries.

Bad input raises an error that names the field, key or file and the fix. The CLI prints the message in one or
two lines without a traceback (``--debug`` shows it) and exits with the class's exit code.
"""


class WhisperK8sError(Exception):
    """Base class; ``exit_code`` tells the CLI what to return."""

    exit_code = 1


class UserError(WhisperK8sError, ValueError):
    """Bad input: a flag, a values field, a file, a checkpoint key. The message names it and the fix."""

    exit_code = 2


class ClusterError(WhisperK8sError, RuntimeError):
    """The cluster (or local backend) could not be reached or refused: no cluster, no operator, RBAC."""

    exit_code = 3


class JobFailed(WhisperK8sError, RuntimeError):
    """The job ran and failed."""

    exit_code = 4
