"""Management package of master_app (holds its manage.py commands)."""
