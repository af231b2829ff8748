"""Settings modules: ``base`` plus one small module per role and ``test``."""
