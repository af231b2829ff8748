"""distdb benchmarks (issue #5): YCSB-style workloads against a real local cluster.

``python -m bench`` (``make bench``; ``make bench-quick`` for the small version) starts a
cluster on free ports, drives it through the public API of both client servers, measures
the same operations one hop away (a tablet server's internal API) and in-process (the
storage layer alone), and writes one JSON file plus a report with plots per run under
``bench/results/``. Nothing here is imported by the servers.
"""
