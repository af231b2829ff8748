"""The single-node peer baseline: a plain Django + DRF CRUD service over one SQLite file.

What a user could run instead of distdb (issue #12): one small app (``Row(key, data JSON)``),
DRF generic views, Django's default middleware, SQLite in WAL mode, served as WSGI by
uvicorn with 2 workers. The benchmark loads it with the same rows as the cluster and drives
it with the same load generator, so "distdb point reads / peer point reads" is in every
report. It is its own Django project (``bench.peer.settings``), never the distdb settings.
"""
