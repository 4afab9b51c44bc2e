"""Pure functions on numpy arrays: uncertainty, metrics, thresholds. No FastAPI, no SQL, no settings."""  # noqa: E501
