"""What every system shares: records and data sources, models, tokens, the SAE, pooling, fine-tuning, evaluation, statistics, the report, atomic artifacts, the selector registry."""
