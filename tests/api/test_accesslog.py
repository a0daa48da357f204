"""The access log never shows the Gerrit secret, however the query spells its name.

Starlette decodes parameter names (``?%74oken=S`` is ``token=S`` to the app, and authenticates
a Gerrit webhook), so the redaction compares names after decoding them too.
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from certifier.api.accesslog import REDACTED, RedactQuerySecrets
from tests.tracking.payloads import body_of, gerrit_ref_updated

SECRET = "gerrit-shared-secret-4c1e"


def access_line(path: str) -> str:
    """Format a record the way uvicorn's access logger makes one, through the filter."""
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "POST", path, "1.1", 202), None)
    assert RedactQuerySecrets().filter(record)
    return record.getMessage()


@pytest.mark.parametrize("name", ["token", "%74oken", "tok%65n", "%54%4F%4B%45%4E", "TOKEN",
                                  "access_token", "private%5ftoken"])
def test_a_secret_parameter_is_blanked_whatever_its_spelling(name: str) -> None:
    line = access_line(f"/api/v1/webhooks/gerrit?{name}={SECRET}&x=1")
    assert SECRET not in line
    assert f"?{name}={REDACTED}&x=1" in line


def test_a_percent_encoded_token_name_authenticates_a_gerrit_webhook(
    client: TestClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CERTIFIER_GERRIT_WEBHOOK_SECRET", SECRET)
    body = body_of(gerrit_ref_updated("grp/comp", "a" * 40))
    answer = client.post(f"/api/v1/webhooks/gerrit?%74oken={SECRET}", content=body)
    assert answer.status_code == 202  # so the log must not show it either (above)


def test_other_parameters_are_kept_as_they_were() -> None:
    line = access_line("/api/v1/deliveries?source=gerrit&before=10&tokens=3")
    assert "?source=gerrit&before=10&tokens=3" in line
