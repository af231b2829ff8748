"""The revoked server tokens this tablet server refuses, as the master pushed them.

Loaded by the tablet server role: the link agent stores each list the master signs
(after the welcome and whenever it changes), and the internal API reads it back through
``distdb.internal_http.RevokedTokenIds`` (cached for a second). ``None`` means no list
has ever arrived: the internal API then refuses every token (fail closed).
"""

from __future__ import annotations

from tablet_app.models import ServerTokenRevocations

__all__ = ["revocations_load", "revocations_store"]
_ROW = 1  # the one row


def revocations_store(jtis: list[str]) -> None:
    """Replace the list with the master's (the whole list each time: idempotent)."""
    ServerTokenRevocations.objects.update_or_create(pk=_ROW, defaults={"jtis": sorted(jtis)})


def revocations_load() -> frozenset[str] | None:
    """The revoked token ids, or None if the master has never sent a list."""
    jtis = ServerTokenRevocations.objects.filter(pk=_ROW).values_list("jtis", flat=True).first()
    return None if jtis is None else frozenset(jtis)
