"""Testbeds and who holds their lease."""

from __future__ import annotations

from fastapi import APIRouter

from certifier.api.deps import SessionDep
from certifier.api.schemas import TestbedList, TestbedOut
from certifier.pipeline import queries

router = APIRouter(prefix="/api/v1/testbeds", tags=["testbeds"])


@router.get("", response_model=TestbedList)
def list_testbeds(session: SessionDep) -> TestbedList:
    return TestbedList(items=[TestbedOut.of(b) for b in queries.list_testbeds(session)])
