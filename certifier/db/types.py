"""Column types that store the domain's records as JSON and read them back typed.

The JSON written is the shape the columns always held (``Excuse.as_dict``,
``bisection_state.Record.as_dict``), so no migration is needed and existing databases read back.
Reading never raises: a stored value of a shape no version wrote becomes an ``unreadable``
excuse or search (see the domain's ``read`` methods), so one odd row cannot turn a page into a
500.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, TypeDecorator
from sqlalchemy.engine import Dialect

from certifier.domain.bisection_state import Record
from certifier.domain.judgement import Excuse


class Excuses(TypeDecorator[tuple[Excuse, ...]]):
    """A list of excuses (``Candidate.excuses``, ``Run.excuses``)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Sequence[Excuse] | None,
                           dialect: Dialect) -> list[dict[str, Any]]:
        return [e.as_dict() for e in value or ()]

    def process_result_value(self, value: Any, dialect: Dialect) -> tuple[Excuse, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            return (Excuse.read(value),)
        return tuple(Excuse.read(e) for e in value)


class Bisection(TypeDecorator[Record]):
    """A candidate's culprit finding (``Candidate.bisection``); None: none ran."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Record | None, dialect: Dialect) -> Any:
        return value.as_dict() if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> Record | None:
        return Record.read(value) if value is not None else None
