"""Typed readers for the environment variables that configure a node.

Every role's settings read their environment through these helpers so that a
bad value fails at start-up with ``ImproperlyConfigured`` naming the variable,
instead of surfacing later as a confusing runtime error. Parsing is delegated
to ``environs`` (a well-kept library) and its errors are re-raised in Django's
vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured
from environs import Env, EnvError

_env = Env()

T = TypeVar("T")


def _wrap(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(name, *args, **kwargs)
    except EnvError as exc:
        raw = os.environ.get(name)
        raise ImproperlyConfigured(f"{name}={raw!r} is not valid: {exc}") from exc


def env_str(name: str, default: str) -> str:
    value = _wrap(name, _env.str, default)
    if not value:
        raise ImproperlyConfigured(f"{name} must not be empty")
    return value


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    value = _wrap(name, _env.int, default)
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum {maximum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _wrap(name, _env.float, default)
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    return _wrap(name, _env.bool, default)


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    value = env_str(name, default)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in schemes or not rest:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a URL with scheme {' or '.join(schemes)}"
        )
    return value.rstrip("/")


def env_redis_url(name: str, default: str, *, password_file: str) -> str:
    """A Redis URL (``redis://``, ``rediss://`` for TLS, ``unix://``; credentials and TLS
    options as redis-py reads them), with the password of the file named by the
    environment variable ``password_file`` put in, if it is set.

    A password in a file keeps it out of process listings, printed configurations and
    the environment other programs inherit (``make run``'s own Redis has one).
    """
    url = env_url(name, default, schemes=("redis", "rediss", "unix"))
    path = os.environ.get(password_file, "").strip()
    if not path:
        return url
    try:
        password = Path(path).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{password_file}={path!r}: {exc}") from None
    return redis_url_with_password(url, password)


def redis_url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its credentials (the user, if any, kept)."""
    parts = urlsplit(url)
    user = quote(unquote(parts.username), safe="") if parts.username else ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def env_http_url(name: str, default: str) -> str:
    """An ``http://`` or ``https://`` URL, without a trailing slash."""
    return env_url(name, default, schemes=("http", "https"))


def env_port(name: str, default: int) -> int:
    """A TCP port number."""
    return env_int(name, default, minimum=1, maximum=65535)


def env_path(name: str, default: Path) -> Path:
    return Path(env_str(name, str(default))).expanduser().resolve()


def env_node_id(name: str, default: str) -> str:
    """A node id is used in file names, URLs and JWT subjects: keep it plain."""
    value = env_str(name, default)
    if not all(c.isalnum() or c in "-_" for c in value) or len(value) > 64:
        raise ImproperlyConfigured(f"{name}={value!r} must be 1-64 letters, digits, '-' or '_'")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (a typo in a deployment's environment stops it at start-up)."""
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value
