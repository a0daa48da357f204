"""Persistence: SQLAlchemy models, the engine and session wiring, and the repository queries."""
