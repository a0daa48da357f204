"""Celery worker side of Certifier: tasks, the run executor, testbed drivers and suites."""
