"""Persistence: SQLAlchemy 2 models, unit of work, repositories. Migrations live in ``migrations/``."""
