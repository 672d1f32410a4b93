"""The IGDS method's stages (identify)."""
