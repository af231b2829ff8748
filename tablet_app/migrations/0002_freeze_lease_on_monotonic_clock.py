"""Freeze leases move from a wall-clock ``frozen_until`` to a monotonic deadline.

A range frozen at upgrade time stays frozen: it is carried over with an unknown boot, so
the link agent re-arms it for its remaining lease (at least the default move lease) and
then settles it with the master as usual. Dropping it instead could reopen a range the
master has already given away.
"""

from django.db import migrations, models
from django.utils import timezone

DEFAULT_LEASE_S = 10.0


def carry_freezes_over(apps, schema_editor):
    OwnedRange = apps.get_model("tablet_app", "OwnedRange")
    now = timezone.now()
    for r in OwnedRange.objects.filter(frozen_until__isnull=False):
        left = max((r.frozen_until - now).total_seconds(), 0.0)
        r.frozen_deadline = 0.0
        r.frozen_boot = "before-upgrade"  # never this boot: re-armed on first look
        r.frozen_lease_s = max(left, DEFAULT_LEASE_S)
        r.save(update_fields=["frozen_deadline", "frozen_boot", "frozen_lease_s"])


class Migration(migrations.Migration):
    dependencies = [
        ("tablet_app", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="ownedrange",
            name="frozen_boot",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="ownedrange",
            name="frozen_deadline",
            field=models.FloatField(
                blank=True,
                help_text="Monotonic-clock seconds at which the freeze lease ends.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="ownedrange",
            name="frozen_lease_s",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.RunPython(carry_freezes_over, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name="ownedrange",
            name="frozen_until",
        ),
    ]
