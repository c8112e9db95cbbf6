"""Operating the product: backups that restore, incident reports, the specification's indicators."""
