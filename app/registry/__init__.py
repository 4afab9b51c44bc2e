"""The in-process model registry: algorithms by name, training with cross-validation,
skops persistence and an LRU cache of loaded versions."""
