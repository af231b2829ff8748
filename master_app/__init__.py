"""The master role: metadata, the consolidated copy of all data, rebalancing, the admin."""
