"""The preference-data audit's stages: prepare-pairs, audit, intervene, oracle, dpo, reaudit, report-audit, view-audit."""
