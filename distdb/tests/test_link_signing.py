"""Signed master -> tablet link messages: who, what, when, once, this connection."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from distdb import auth, link_signing
from distdb.errors import LinkUnverified
from distdb.link_signing import LinkVerifier, body_digest, link_seal


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono() -> Monotonic:
    return Monotonic()


@pytest.fixture
def verifier(mono) -> LinkVerifier:
    return LinkVerifier("tablet-1", monotonic=mono)


def welcome(verifier: LinkVerifier, **kwargs: Any) -> dict[str, Any]:
    return link_seal(
        {"type": "welcome", "heartbeat_s": 5}, "tablet-1", ttl_s=60, nonce=verifier.nonce, **kwargs
    )


def command(node: str = "tablet-1", ttl_s: float = 30, **fields: Any) -> dict[str, Any]:
    return link_seal({"type": "drop", "id": "c1", "table": "t", **fields}, node, ttl_s=ttl_s)


def test_a_welcome_then_signed_commands_open_to_their_bodies(verifier):
    assert verifier.open(welcome(verifier)) == {"type": "welcome", "heartbeat_s": 5}
    assert verifier.open(command()) == {"type": "drop", "id": "c1", "table": "t"}


def test_an_unsigned_message_is_refused(verifier):
    verifier.open(welcome(verifier))
    with pytest.raises(LinkUnverified, match="not signed"):
        verifier.open({"type": "drop", "id": "c1", "table": "t"})


def test_a_message_for_another_tablet_is_refused(verifier):
    verifier.open(welcome(verifier))
    with pytest.raises(LinkUnverified, match="bad signature"):
        verifier.open(command(node="tablet-2"))


def test_a_message_signed_with_another_key_is_refused(verifier):
    verifier.open(welcome(verifier))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = {"type": "drop", "id": "c1", "table": "t"}
    claims = {
        "aud": link_signing.link_audience("tablet-1"),
        "iat": auth.clock(),
        "exp": auth.clock() + 30,
        "jti": "j",
        "sha": body_digest(body),
    }
    forged = {**body, "sig": jwt.encode(claims, other, algorithm="RS256")}
    with pytest.raises(LinkUnverified, match="bad signature"):
        verifier.open(forged)


@pytest.mark.parametrize(
    "change", [{"table": "products"}, {"extra": 1}, {"id": "c2"}], ids=["field", "added", "id"]
)
def test_a_changed_or_extended_body_is_refused(verifier, change):
    verifier.open(welcome(verifier))
    with pytest.raises(LinkUnverified, match="does not match"):
        verifier.open({**command(), **change})


def test_the_same_message_twice_is_a_replay(verifier):
    verifier.open(welcome(verifier))
    once = command()
    verifier.open(once)
    with pytest.raises(LinkUnverified, match="replayed"):
        verifier.open(once)


def test_a_message_expires_by_the_masters_clock_as_the_tablet_measures_it(verifier, mono):
    verifier.open(welcome(verifier))
    late = command(ttl_s=10)
    mono.now += 10 + link_signing.CLOCK_SKEW_S + 0.1  # held back in Redis for that long
    with pytest.raises(LinkUnverified, match="expired"):
        verifier.open(late)


def test_a_stepped_wall_clock_on_the_tablet_changes_nothing(verifier, monkeypatch):
    """Only the master's wall clock is read (when it signs); the tablet counts on its
    monotonic clock from the welcome, so stepping its wall clock a day does not matter."""
    verifier.open(welcome(verifier))
    sent = command()
    monkeypatch.setattr("time.time", lambda: 86_400 * 365 * 60.0)
    assert verifier.open(sent)["id"] == "c1"


def test_a_welcome_must_echo_this_connections_nonce(verifier):
    with pytest.raises(LinkUnverified, match="not for this connection"):
        verifier.open(link_seal({"type": "welcome"}, "tablet-1", ttl_s=60, nonce="other"))


def test_nothing_is_accepted_before_the_welcome_and_no_second_welcome_after(verifier):
    with pytest.raises(LinkUnverified, match="before the master's welcome"):
        verifier.open(command())
    verifier.open(welcome(verifier))
    with pytest.raises(LinkUnverified, match="second welcome"):
        verifier.open(welcome(verifier))


def test_a_welcome_sets_the_tablets_estimate_of_the_masters_clock(verifier, mono, monkeypatch):
    monkeypatch.setattr(auth, "clock", lambda: 5_000.0)
    verifier.open(welcome(verifier))
    mono.now += 7
    assert verifier.master_now() == pytest.approx(5_007.0)


def test_remembered_messages_are_forgotten_once_expired(verifier, mono, monkeypatch):
    monkeypatch.setattr(link_signing, "MAX_REMEMBERED", 3)
    verifier.open(welcome(verifier))
    verifier.open(command(ttl_s=1))
    verifier.open(command(ttl_s=1))
    mono.now += 1 + link_signing.CLOCK_SKEW_S + 0.1
    verifier.open(command())  # the two expired ones make room
    verifier.open(command())
    with pytest.raises(LinkUnverified, match="too many"):
        verifier.open(command())
