"""The database schema: a create script for the current version and one
upgrade script per version step, applied by piw-initdb."""
