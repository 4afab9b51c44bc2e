"""Adapters for the outside world: request-body readers, import files and SQL sources, the LLM
client. No FastAPI and no project logic here."""
