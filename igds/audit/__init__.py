"""The preference-data audit: pairs, paired tests and concepts, interventions, DPO, the re-audit, the report and viewer."""
