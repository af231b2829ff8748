"""Settings validation: a bad environment fails at start-up naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from distdb.env import env_http_url, env_int, env_node_id, env_port, env_url


def _load(role: str, **env: str) -> subprocess.CompletedProcess:
    """Import a role's settings in a fresh interpreter, as runserver would."""
    code = f"import importlib; importlib.import_module('distdb.settings.{role}')"
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True
    )


@pytest.mark.parametrize("role", ["master", "tablet", "client"])
def test_every_role_loads_with_the_defaults(role, tmp_path):
    result = _load(role, DISTDB_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DISTDB_PORT", "seventy"),
        ("DISTDB_PORT", "70000"),
        ("DISTDB_MASTER_URL", "ftp://master"),
        ("DISTDB_REDIS_URL", "localhost:6379"),
        ("DISTDB_NODE_ID", "tablet 1/evil"),
        ("DISTDB_DATABASE_URL", "nosuchdb://x"),
        ("DISTDB_MAX_BODY_BYTES", "-5"),
        ("DISTDB_DEBUG", "perhaps"),
    ],
)
def test_a_bad_value_fails_at_start_up_naming_the_variable(variable, value, tmp_path):
    result = _load("tablet", DISTDB_DATA_DIR=str(tmp_path), **{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr


def test_env_int_names_the_variable(monkeypatch):
    monkeypatch.setenv("DISTDB_X", "nope")
    with pytest.raises(ImproperlyConfigured, match="DISTDB_X"):
        env_int("DISTDB_X", 1)


def test_env_url_requires_an_allowed_scheme(monkeypatch):
    monkeypatch.setenv("DISTDB_U", "http://ok:1/")
    assert env_url("DISTDB_U", "x", schemes=("http",)) == "http://ok:1"
    monkeypatch.setenv("DISTDB_U", "http:/broken")
    with pytest.raises(ImproperlyConfigured, match="DISTDB_U"):
        env_url("DISTDB_U", "x", schemes=("http",))


def test_a_port_is_between_1_and_65535(monkeypatch):
    monkeypatch.setenv("DISTDB_P", "65535")
    assert env_port("DISTDB_P", 1) == 65535
    for bad in ("0", "65536"):
        monkeypatch.setenv("DISTDB_P", bad)
        with pytest.raises(ImproperlyConfigured, match="DISTDB_P"):
            env_port("DISTDB_P", 1)


def test_an_http_url_is_http_or_https(monkeypatch):
    monkeypatch.setenv("DISTDB_U", "https://ok:1/")
    assert env_http_url("DISTDB_U", "x") == "https://ok:1"
    monkeypatch.setenv("DISTDB_U", "redis://ok:1")
    with pytest.raises(ImproperlyConfigured, match="DISTDB_U"):
        env_http_url("DISTDB_U", "x")


def test_a_node_id_is_plain(monkeypatch):
    monkeypatch.setenv("DISTDB_N", "tablet-1")
    assert env_node_id("DISTDB_N", "x") == "tablet-1"
    monkeypatch.setenv("DISTDB_N", "../etc")
    with pytest.raises(ImproperlyConfigured, match="DISTDB_N"):
        env_node_id("DISTDB_N", "x")


def test_runserver_refuses_to_start_without_keys_and_names_the_setting(tmp_path):
    env = {
        **os.environ,
        "DISTDB_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "distdb.settings.tablet",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "runserver", "--noreload", "127.0.0.1:0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DISTDB_PUBLIC_KEY_FILE" in result.stderr
    assert "DISTDB_TOKEN" in result.stderr
