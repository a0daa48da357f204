"""The domain stays pure: no web framework, task queue, database or subprocess in it."""

import ast
from pathlib import Path

import certifier.domain

FORBIDDEN = {"fastapi", "starlette", "celery", "kombu", "sqlalchemy", "subprocess", "alembic",
             "httpx", "requests"}


def test_domain_imports_no_framework_queue_database_or_subprocess() -> None:
    folder = Path(certifier.domain.__file__).parent
    offenders = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert len(list(folder.rglob("*.py"))) >= 7
    assert offenders == []
