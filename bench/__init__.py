"""Measured studies, each one command: the selection-cost benchmark (issue 8: `python -m bench.run`,
IGDS scoring against a bare forward pass, every method's selection wall time, break-even pool size,
peak memory, DVC's no-op and partial re-runs), `bench.prefix`, `bench.tasks`; the audit's studies
in bench/audit/ (power, accuracy, shaping)."""
