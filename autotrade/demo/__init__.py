"""The embedded stack and ``autotrade demo``."""
