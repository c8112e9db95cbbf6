"""Trading services: scan intake, signals, exactly-once orders, fills, exits and reconciliation."""
