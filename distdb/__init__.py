"""distdb: a Bigtable-style distributed database as one Django project.

This package is wiring only (settings, URL confs, ASGI, Celery) plus the few
modules every role shares: ``protocol``, ``errors``, ``auth`` and ``keys``.
"""

from distdb.files import private_by_default

private_by_default()  # before any process of ours creates a file (distdb.files)

from distdb.celery import app as celery_app  # noqa: E402

__all__ = ["celery_app"]
