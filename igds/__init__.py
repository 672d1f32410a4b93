"""igds-bench: Interpretability-Guided Data Selection and the baselines it is measured against."""

__version__ = "0.1.0"
