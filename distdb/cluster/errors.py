"""The launcher's one error (its own module: the config and the network layer both raise it)."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """A cluster could not be prepared, started or driven (the message says which process)."""
