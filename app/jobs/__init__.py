"""Background jobs: the runners (in-process thread, or procrastinate workers) and one function
per job kind. Jobs take ids, open their own sessions, and write their results in one place."""
