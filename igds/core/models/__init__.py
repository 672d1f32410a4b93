"""Models: `dims` (what a model is, from its config files: no torch), `loading` (the bundled
GGUF default, hub ids, local dirs) and `residual` (residual-stream hooks). Import the
submodule you need: this package imports nothing, so checking params stays light."""
