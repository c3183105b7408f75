"""Persistence: schema, migrations, repository, indexer, search SQL (SQLite and PostgreSQL)."""
