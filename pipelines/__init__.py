"""One module per DVC stage: argument parsing and io only; the work is in igds/ and baselines/."""
