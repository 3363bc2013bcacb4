"""The dg defs folder: each subfolder declares definitions, e.g. ``baize/defs.yaml``."""
