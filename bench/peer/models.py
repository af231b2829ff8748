from django.db import models


class Row(models.Model):
    """One row: an integer key and its cells as JSON."""

    key = models.BigIntegerField(primary_key=True)
    data = models.JSONField()

    class Meta:
        app_label = "peer"

    def __str__(self) -> str:
        return str(self.key)
