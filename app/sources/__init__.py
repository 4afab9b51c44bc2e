"""Adapters for the outside world: request-body readers now; files, SQL, click logs, LLMs later."""
