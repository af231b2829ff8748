"""Old name of :mod:`distdb.api_handler`, kept only for ``client_app/tests/conftest.py``.

Delete this module once that conftest imports ``PublicApiASGIHandler`` from
``distdb.api_handler`` (its owner's change; see issue #13).
"""

from distdb.api_handler import PublicApiASGIHandler as LeanASGIHandler

__all__ = ["LeanASGIHandler"]
