"""distdb: a Bigtable-style distributed database as one Django project.

This package is wiring only (settings, URL confs, ASGI, Celery) plus the few
modules every role shares: ``protocol``, ``errors``, ``auth`` and ``keys``.
"""

from distdb.celery import app as celery_app

__all__ = ["celery_app"]
