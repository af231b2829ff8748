"""Session-wide fixtures: a master key pair in the test data dir (all roles sign tokens)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def master_keys():
    from django.conf import settings

    from distdb.auth import generate_key_pair

    generate_key_pair(settings.DISTDB_PRIVATE_KEY_FILE, settings.DISTDB_PUBLIC_KEY_FILE)
    return settings.DISTDB_PRIVATE_KEY_FILE, settings.DISTDB_PUBLIC_KEY_FILE


def pytest_collection_modifyitems(config, items):
    """Mark every database-facing unit test ``postgres``: CI runs them again on PostgreSQL."""
    db_fixtures = {"db", "transactional_db", "django_db_setup", "admin_client", "servers"}
    for item in items:
        if item.get_closest_marker("integration"):
            continue
        uses_db = item.get_closest_marker("django_db") or db_fixtures & set(
            getattr(item, "fixturenames", ())
        )
        if uses_db:
            item.add_marker(pytest.mark.postgres)
