"""Admin of a client server: Django's users only.

A client server stores nothing of its own (DESIGN §1: stateless apart from the in-memory
routing cache), so there is nothing to register here; the master's admin shows the
metadata and the cluster.
"""
