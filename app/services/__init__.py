"""Use cases: load, decide, persist. Keyword-only module functions; one commit per write."""
