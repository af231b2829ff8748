"""distdb's fault harness: a seeded nemesis against a real local cluster, and its checkers.

Not loaded by any server role; like ``bench/`` it drives a cluster from outside, through
the public API, and judges the history it recorded (``chaos.checker``).
"""
