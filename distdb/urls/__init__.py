"""One URL conf per role (CONVENTIONS §3)."""
