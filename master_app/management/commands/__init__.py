"""manage.py commands of the master node."""
