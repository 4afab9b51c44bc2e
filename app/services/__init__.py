"""Use cases: load, decide, persist. Module functions with keyword-only arguments; one commit each."""
