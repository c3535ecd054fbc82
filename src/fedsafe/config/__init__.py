"""The config below the reporting layer: its schema (schema.py), the grid it declares (grid.py),
the job specs built from it (specs.py) and their hashes (hashing.py). Light (no torch): the
Snakefile imports it at parse time.

Loading a config and checking it against the registries and the claims is fedsafe.config_check,
above the reporting layer (the claims read the summary, which reads the grid from here).
"""
