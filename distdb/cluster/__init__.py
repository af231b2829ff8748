"""Local clusters: one launcher for ``make run``, the benchmark, the tests and fault harnesses.

* ``config``: the nodes, ports, environment and process list of a cluster (pure data).
* ``prepare``: keys, tokens, databases, admin users, API token (runs as the master).
* ``process``: one supervised process (its own process group, a log file, signals).
* ``launcher``: ``LocalCluster``, every process by name: start, kill, stop, pause,
  resume, restart, wait until ready, close.

Why the launcher supervises the processes itself rather than through honcho (which ran
``make run`` before): honcho's manager owns its children and stops them all when one
exits, so it can neither SIGKILL, pause nor restart one process, and the tests and the
benchmark would then start clusters through other code than ``make run``. One supervisor
means ``make run`` exercises exactly what the tests do. honcho's printer still formats
``make run``'s output, so it looks as before.
"""

from distdb.cluster.config import ClusterConfig, ClusterError, Node, ProcessSpec, free_ports
from distdb.cluster.launcher import LocalCluster
from distdb.cluster.process import Process, group_members

__all__ = [
    "ClusterConfig",
    "ClusterError",
    "LocalCluster",
    "Node",
    "Process",
    "ProcessSpec",
    "free_ports",
    "group_members",
]
