"""State files are private from their first byte; Redis passwords come from a file."""

from __future__ import annotations

import os
import stat

import pytest
from django.core.exceptions import ImproperlyConfigured

from distdb.env import env_redis_url, redis_url_with_password
from distdb.files import private_dir, write_private


@pytest.fixture
def open_umask():
    """The loosest umask a caller could have set: modes must not depend on it."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_secret_is_created_0600_and_its_new_directory_0700_whatever_the_umask(
    tmp_path, open_umask
):
    path = tmp_path / "keys" / "master.pem"
    write_private(path, "secret")
    assert path.read_text() == "secret"
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    assert [p.name for p in path.parent.iterdir()] == ["master.pem"]  # no temporary left


def test_a_rewrite_replaces_the_whole_file_atomically(tmp_path):
    path = tmp_path / "token"
    write_private(path, b"a much longer first token\n")
    write_private(path, b"short\n")
    assert path.read_bytes() == b"short\n"


def test_a_private_dir_is_0700(tmp_path, open_umask):
    assert mode(private_dir(tmp_path / "a" / "b")) == 0o700


def test_distdb_processes_run_with_a_private_umask():
    import distdb  # noqa: F401 - importing the package sets it (every entry point does)

    current = os.umask(0o077)
    os.umask(current)
    assert current == 0o077


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://:p%40ss%2Fw@127.0.0.1:6379/0"),
        ("rediss://user@redis.example:6380/1", "rediss://user:p%40ss%2Fw@redis.example:6380/1"),
        ("redis://old:secret@h:1/0", "redis://old:p%40ss%2Fw@h:1/0"),
    ],
)
def test_a_password_is_put_into_a_redis_url_escaped(url, expected):
    assert redis_url_with_password(url, "p@ss/w") == expected


def test_the_redis_password_comes_from_the_named_file(tmp_path, monkeypatch):
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("R_URL", "redis://10.0.0.5:6379/0")
    monkeypatch.setenv("R_PASSWORD_FILE", str(secret))
    assert env_redis_url("R_URL", "-", password_file="R_PASSWORD_FILE") == (
        "redis://:s3cret@10.0.0.5:6379/0"
    )
    monkeypatch.setenv("R_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="R_PASSWORD_FILE"):
        env_redis_url("R_URL", "-", password_file="R_PASSWORD_FILE")
    monkeypatch.delenv("R_PASSWORD_FILE")
    assert env_redis_url("R_URL", "-", password_file="R_PASSWORD_FILE") == "redis://10.0.0.5:6379/0"
