"""Selection-cost benchmark (issue 8): IGDS scoring against a bare forward pass, every
method's selection wall time, IGDS end to end and its break-even pool size, peak memory at
n and 4n, and DVC's no-op and partial re-runs. One command: `python -m bench.run`."""
