"""FastAPI app: the specification's REST endpoints with authentication and per-user isolation."""
