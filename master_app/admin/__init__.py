"""The master's admin: inspect and operate the cluster (tables, servers, tablets, runs, tokens,
failovers). One module per topic; importing them registers their ``ModelAdmin``s."""

from master_app.admin import _cluster, _replication, _runs, _tokens

__all__ = ["_cluster", "_replication", "_runs", "_tokens"]
