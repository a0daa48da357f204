"""The base of every response schema: frozen, so an answer is never changed after it is built."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Out(BaseModel):
    model_config = ConfigDict(frozen=True)
