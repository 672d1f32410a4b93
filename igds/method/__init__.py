"""IGDS itself: frequency recall, interventional filtering, the Feature-Resonant Score."""
