"""Master models: the cluster's metadata, its consolidated copy of the data, and run reports."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from distdb.fields import KeyField
from distdb.keys import bound_display, decode_key
from distdb.protocol import MAX_RF


def default_rf() -> int:
    """A new table's replication factor (``DISTDB_DEFAULT_RF``)."""
    return int(getattr(settings, "DISTDB_DEFAULT_RF", 2))


class Table(models.Model):
    """A table: its key type, its allowed columns and the allocator for generated int keys."""

    KEY_TYPES = [("int", "integer"), ("str", "string")]

    name = models.SlugField(max_length=64, unique=True)
    key_type = models.CharField(max_length=3, choices=KEY_TYPES, default="int")
    columns = models.JSONField(
        null=True, blank=True, help_text="Allowed column names; empty means any column."
    )
    next_key = models.BigIntegerField(
        default=1, help_text="Next integer key the allocator hands out (server-maintained)."
    )
    rf = models.PositiveSmallIntegerField(
        default=default_rf,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_RF)],
        verbose_name="replication factor",
        help_text="Copies of each range (a leader and rf-1 followers on other servers). "
        "1: no replicas, no failover.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DroppedTable(models.Model):
    """A deleted table whose rows some tablet servers may still store.

    Its name cannot be given to a new table until every server in ``servers`` has dropped
    the old rows and change-log entries (they would show up in the new table).
    """

    name = models.CharField(max_length=64, unique=True)
    dropped_at = models.DateTimeField(auto_now_add=True)
    servers = models.JSONField(default=list, help_text="Servers that have not dropped it yet.")

    def __str__(self) -> str:
        return f"{self.name} (dropping on {', '.join(self.servers) or 'nobody'})"


class TabletServer(models.Model):
    """A tablet server known to the master; ``state`` is maintained from its heartbeats."""

    class State(models.TextChoices):
        UP = "up", "up"
        DOWN = "down", "down"

    node_id = models.CharField(max_length=64, unique=True)
    url = models.URLField(help_text="Base URL of its internal API.")
    state = models.CharField(max_length=8, choices=State.choices, default=State.DOWN)
    draining = models.BooleanField(
        default=False, help_text="A draining server is given no data at the next rebalance."
    )
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    acked_seq = models.BigIntegerField(
        default=0, help_text="Last change-log sequence number applied to the master's copy."
    )
    trim_floor = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="While a range is being moved off this server, its change log is not "
        "trimmed past this sequence number (the move's catch-up still reads it).",
    )
    lease_granted_at = models.FloatField(
        null=True,
        blank=True,
        help_text="CLOCK_MONOTONIC reading (on the master's host) of its last leader-lease grant.",
    )
    lease_boot = models.CharField(max_length=64, blank=True, default="")
    deposed = models.JSONField(
        default=list,
        blank=True,
        help_text="Ranges failed over away from this server whose uncollected change-log "
        "entries must not be applied ({table, start, end, upto}).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["node_id"]

    def __str__(self) -> str:
        return self.node_id


class MetadataVersion(models.Model):
    """One committed version of the routing metadata; the highest is current."""

    version = models.BigIntegerField(primary_key=True)
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"v{self.version}"


class Tablet(models.Model):
    """A half-open stored-key range [start_key, end_key) of a table and the server that owns it."""

    table = models.ForeignKey(Table, on_delete=models.CASCADE, related_name="tablets")
    start_key = KeyField(blank=True, default="", help_text="Stored key; empty = -inf.")
    end_key = KeyField(null=True, blank=True, help_text="Stored key; empty = +inf.")
    server = models.ForeignKey(
        TabletServer, on_delete=models.PROTECT, related_name="tablets", verbose_name="leader"
    )
    in_sync = models.JSONField(
        default=list,
        blank=True,
        help_text="Node ids of the followers holding every acknowledged write (the leader "
        "replicates to each before it acknowledges).",
    )
    version = models.BigIntegerField(help_text="Metadata version that last changed this tablet.")

    class Meta:
        ordering = ["table__name", "start_key"]
        constraints = [
            models.UniqueConstraint(fields=["table", "start_key"], name="tablet_unique_start")
        ]

    def __str__(self) -> str:
        return f"{self.table.name}[{self.start_display()}, {self.end_display()})"

    def start_display(self) -> str:
        return bound_display(self.table.key_type, self.start_key)

    def end_display(self) -> str:
        return bound_display(self.table.key_type, self.end_key or None)


class ConsolidatedRow(models.Model):
    """The master's copy of a row, refreshed from the tablet servers' change logs."""

    table = models.ForeignKey(Table, on_delete=models.CASCADE, related_name="rows")
    key = KeyField()
    cells = models.JSONField()
    source_server = models.CharField(max_length=64, blank=True)
    source_seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["table", "key"]
        constraints = [models.UniqueConstraint(fields=["table", "key"], name="row_unique_key")]

    def __str__(self) -> str:
        return f"{self.table.name}/{self.display_key()}"

    def display_key(self) -> str:
        return str(decode_key(self.table.key_type, self.key))


class Lease(models.Model):
    """A named lock with an expiry, so that a holder that dies cannot hold it for good.

    ``maintenance`` is held by a rebalance run (and by seeding) for its whole duration:
    one run at a time, and nothing else copies rows into ranges while one runs.
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.holder or 'free'})"


class RebalanceRun(models.Model):
    """The report of one rebalance run: its trigger, plan, moves, freezes, outcome."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        NOTHING_TO_DO = "nothing_to_do", "nothing to do"
        PLANNED = "planned", "planned (dry run)"
        FAILED = "failed", "failed"

    trigger = models.CharField(max_length=32)
    dry_run = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    plan = models.JSONField(default=list, blank=True)
    moves = models.JSONField(default=list, blank=True, help_text="Rows moved and freeze per range.")
    rows_moved = models.BigIntegerField(default=0)
    longest_freeze_ms = models.FloatField(default=0)
    duration_s = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    step = models.CharField(max_length=200, blank=True, help_text="What the run is doing now.")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.trigger}, {self.outcome})"


class ApiToken(models.Model):
    """A public API token. The token itself is an RS256 JWT shown once; only its id is kept."""

    name = models.CharField(max_length=100)
    jti = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class ServerToken(models.Model):
    """A server token the master signed (tablet or client role): revocable, like ApiToken.

    The token itself is written to the node's token file and never stored; its id
    (``jti``) is. A revoked token is refused by the master (link and internal API) and,
    once the master has pushed the list over the link, by every tablet server.
    ``url`` is the URL bound into a tablet's token (the only one it may register).
    """

    node_id = models.CharField(max_length=64, db_index=True)
    role = models.CharField(max_length=16)
    jti = models.CharField(max_length=64, unique=True, editable=False)
    url = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["node_id", "-created_at"]

    def __str__(self) -> str:
        return f"{self.role} {self.node_id} ({self.jti[:8]})"


class Failover(models.Model):
    """One automatic failover: a range's leader lost its lease and a follower took over."""

    table = models.CharField(max_length=64)
    start_key = KeyField(blank=True, default="")
    end_key = KeyField(null=True, blank=True)
    from_server = models.CharField(max_length=64)
    to_server = models.CharField(max_length=64)
    version = models.BigIntegerField(help_text="The metadata version that promoted the follower.")
    at = models.DateTimeField(auto_now_add=True)
    unavailable_s = models.FloatField(
        help_text="From the old leader's last lease grant to the promotion: the longest the "
        "range can have been without a serving leader."
    )

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        bounds = f"[{self.start_key!r}, {self.end_key!r})"
        return f"{self.table}{bounds} {self.from_server} -> {self.to_server}"
