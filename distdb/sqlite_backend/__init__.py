"""Django's SQLite backend with write transactions that queue in the process (see ``base``)."""
