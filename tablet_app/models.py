"""Tablet server models: rows, the ordered change log, and this server's view of the metadata."""

from __future__ import annotations

from django.db import models

from distdb.fields import KeyField


class Row(models.Model):
    """A stored row. ``cells`` is kept as the JSON text it was written as (encoded once)."""

    table = models.CharField(max_length=64)
    key = KeyField()
    cells = models.TextField(help_text="JSON object: column -> value.")

    class Meta:
        ordering = ["table", "key"]
        constraints = [models.UniqueConstraint(fields=["table", "key"], name="tablet_row_key")]

    def __str__(self) -> str:
        return f"{self.table}/{self.key}"


class ChangeLogEntry(models.Model):
    """One committed change to a row, in commit order; written in the row's own transaction.

    ``cells`` is the row's full image after the change (None for a delete), so applying
    entries in ``seq`` order is idempotent: replaying a batch changes nothing.
    """

    class Op(models.TextChoices):
        PUT = "put", "put"
        DELETE = "delete", "delete"
        CLEAR = "clear", "clear range"  # key = start, cells = {"end": end}: a promotion's reset

    seq = models.BigAutoField(primary_key=True)
    table = models.CharField(max_length=64)
    key = KeyField()
    op = models.CharField(max_length=6, choices=Op.choices)
    cells = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["table", "key", "seq"], name="changelog_table_key")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.op} {self.table}/{self.key}"


class OwnedRange(models.Model):
    """A key range this server serves, as of a metadata version.

    ``frozen_*`` is the freeze lease of a range being moved away: reads and writes are
    refused (retryably) while it is set. It is a deadline on this host's monotonic clock
    in the boot ``frozen_boot``, never a wall-clock time (``services.freezes`` says why).
    """

    table = models.CharField(max_length=64)
    start_key = KeyField(blank=True, default="")
    end_key = KeyField(null=True, blank=True)
    version = models.BigIntegerField()
    frozen_deadline = models.FloatField(
        null=True, blank=True, help_text="Monotonic-clock seconds at which the freeze lease ends."
    )
    frozen_boot = models.CharField(max_length=64, blank=True, default="")
    frozen_lease_s = models.FloatField(null=True, blank=True)
    replicated = models.BooleanField(
        default=False,
        help_text="The table's rf is above 1: served only under the master's leader lease.",
    )
    followers = models.JSONField(
        default=list,
        blank=True,
        help_text="The in-sync followers ([node, url]) every write is replicated to.",
    )
    ready_seq = models.BigIntegerField(
        default=0,
        help_text="Served only once the entries up to this seq reached every follower (a new "
        "leader's snapshot of the range, services.replication).",
    )

    class Meta:
        ordering = ["table", "start_key"]
        constraints = [
            models.UniqueConstraint(fields=["table", "start_key"], name="owned_range_start")
        ]

    def __str__(self) -> str:
        return f"{self.table}[{self.start_key!r}, {self.end_key!r}) v{self.version}"


class FollowedRange(models.Model):
    """A key range this server holds as an in-sync follower of ``leader`` (never served to
    clients): it applies the leader's change-log entries (``services.replication``)."""

    table = models.CharField(max_length=64)
    start_key = KeyField(blank=True, default="")
    end_key = KeyField(null=True, blank=True)
    leader = models.CharField(max_length=64)
    version = models.BigIntegerField()
    applied_seq = models.BigIntegerField(
        default=0, help_text="The leader's seq of the last entry applied here."
    )
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["table", "start_key"]
        constraints = [
            models.UniqueConstraint(fields=["table", "start_key"], name="followed_range_start")
        ]

    def __str__(self) -> str:
        return f"{self.table}[{self.start_key!r}, {self.end_key!r}) of {self.leader}"


class MetadataSnapshot(models.Model):
    """The latest metadata this server has been told about (sent back with ``outdated``)."""

    version = models.BigIntegerField(primary_key=True)
    data = models.JSONField()
    received_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"v{self.version}"


class ServerTokenRevocations(models.Model):
    """The revoked server tokens, as the master last sent them over the link: one row.

    The link agent writes it (``services.revocations``); the internal API refuses those
    tokens, and refuses every token while the row does not exist yet (fail closed: the
    master has never told this server). Kept in the database so that a restarted tablet
    server enforces the last list without waiting for the master.
    """

    jtis = models.JSONField(default=list, help_text="The ids (jti) of revoked server tokens.")
    received_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "server token revocations"

    def __str__(self) -> str:
        return f"{len(self.jtis)} revoked server token(s)"
