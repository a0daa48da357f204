"""The REST API (v1): the FastAPI application factory, its routers, schemas and error handling.

Build it with :func:`certifier.api.app.create_app`; nothing here is created at import time.
"""
