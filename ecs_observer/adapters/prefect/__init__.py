"""The Prefect API: one HTTP client, and what the pipeline sends through it."""
