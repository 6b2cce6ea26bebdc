"""The one exception the development cluster raises."""


class ClusterError(RuntimeError):
    """A one-line, user-facing reason the development cluster could not be started, queried or stopped.

    Callers (the CLI, the pytest fixture) print ``str(error)`` as-is, so messages name the failing piece and, where
    there is one, the log file to read next.
    """
