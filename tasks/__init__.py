"""Prefect tasks: thin, typed, retryable wrappers over the autotrade services."""
