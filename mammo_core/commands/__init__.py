"""Sub-commands of the `mammo` CLI, one module each (see mammo_core/cli.py)."""
