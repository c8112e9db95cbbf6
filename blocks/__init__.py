"""Prefect Block classes for the product: broker endpoint, credential vault, database, notifiers."""
