"""Session-wide fixtures: a master key pair in the test data dir (every role's tests sign tokens)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def master_keys():
    from django.conf import settings

    from distdb.auth import generate_key_pair

    generate_key_pair(settings.DISTDB_PRIVATE_KEY_FILE, settings.DISTDB_PUBLIC_KEY_FILE)
    return settings.DISTDB_PRIVATE_KEY_FILE, settings.DISTDB_PUBLIC_KEY_FILE
