"""Master services: plain functions named <thing>_<action>; edges call exactly one."""
