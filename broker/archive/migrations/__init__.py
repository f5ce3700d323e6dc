"""Alembic migrations of the archive; run them with ``mmbroker db upgrade``."""
