"""The controller's store: SQLAlchemy models, sessions and Alembic migrations."""
