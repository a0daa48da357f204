"""The pure heart of Certifier: plain data in, decisions out.

Nothing in this package imports FastAPI, Celery, SQLAlchemy or subprocess; a test enforces it.
Time always arrives through an injected :class:`~certifier.domain.clock.Clock`.
"""
