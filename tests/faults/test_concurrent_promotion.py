"""1,000 concurrent promotion attempts make exactly one new known-good.

Many candidates soak on the same known-good #1; threads with their own sessions on a real engine
(no rolled-back outer transaction: every attempt commits for real) race to promote them, half
through the operator's manual promotion (``actions.promote``, the API's path) and half through
the bare compare-and-swap (``knowngood.promote``, the scheduler's). Exactly one attempt wins;
every other one loses with a ``Conflict`` (the base moved) or an ``IntegrityError`` (the version
or the candidate is taken), and nothing else goes wrong.

PostgreSQL: 50 threads x 20 attempts. SQLite (one writer at a time): a few threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from certifier.db import migrate, models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import actions, components, knowngood, toolbox
from certifier.pipeline.errors import Conflict
from tests.factories import SOAK, World, sha

CANDIDATES = 50


@pytest.fixture
def engine(empty_database_url: str) -> Iterator[Engine]:
    """A real engine on a fresh database of this test's own, migrated to head."""
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url, pool_size=60, max_overflow=10, pool_timeout=60)
    yield engine
    engine.dispose()


def _soaking_on_version_one(engine: Engine, clock: FakeClock) -> list[int]:
    """Known-good #1, then CANDIDATES soaking candidates all based on it; their ids."""
    world = World(make_session_factory(engine), clock)
    world.component("nova")
    world.component("neutron")
    world.testbed("gate1")
    world.commit("nova", "n0")
    world.commit("neutron", "q0")
    assert world.promote_heads() == 1
    ids = []
    with session_scope(world.factory) as session:
        kg = knowngood.current(session)
        assert kg is not None
        base = knowngood.combination_of(session, kg.combination_hash)
        for i in range(CANDIDATES):
            combo = base.replace(nova=sha(f"nova-{i}"))
            components.ensure_combination(session, combo, clock)
            now = clock.now()
            cand = models.Candidate(combination_hash=combo.hash, state=CandidateState.SOAKING,
                                    base_version=1, changed=["nova"], excuses=[], created_at=now,
                                    updated_at=now, gating_started_at=now, soak_started_at=now)
            session.add(cand)
            session.flush()
            ids.append(cand.id)
    return ids


def _race(engine: Engine, clock: FakeClock, candidate_ids: list[int], threads: int,
          attempts: int) -> tuple[Counter[str], list[int]]:
    """Every thread makes ``attempts`` promotion attempts; (outcomes by kind, winners' ids)."""
    factory = make_session_factory(engine)
    start = threading.Barrier(threads)
    outcomes: Counter[str] = Counter()
    winners: list[int] = []
    lock = threading.Lock()

    def attempt(thread: int, n: int) -> str:
        cid = candidate_ids[(thread * attempts + n) % len(candidate_ids)]
        try:
            with session_scope(factory) as session:
                if n % 2:
                    actions.promote(session, clock, cid, f"token:t{thread}", "race", SOAK,
                                    force=True)
                else:
                    cand = session.get(models.Candidate, cid)
                    assert cand is not None
                    knowngood.promote(session, cand, clock, reason="race")
                    toolbox.move(session, cand, CandidateState.PROMOTED, clock)
        except Conflict:
            return "conflict"
        except IntegrityError:
            return "integrity"
        with lock:
            winners.append(cid)
        return "won"

    def worker(thread: int) -> None:
        start.wait(timeout=60)
        for n in range(attempts):
            try:
                outcome = attempt(thread, n)
            except Exception as exc:  # anything else is a bug; keep it for the assertion
                outcome = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            with lock:
                outcomes[outcome] += 1

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(worker, t) for t in range(threads)]:
            future.result(timeout=240)
    return outcomes, winners


def _check_one_winner(engine: Engine, outcomes: Counter[str], winners: list[int],
                      total: int) -> None:
    assert sum(outcomes.values()) == total
    assert outcomes["won"] == 1, outcomes
    assert set(outcomes) <= {"won", "conflict", "integrity"}, outcomes
    with session_scope(make_session_factory(engine)) as session:
        versions = list(session.scalars(select(models.KnownGood.version)
                                        .order_by(models.KnownGood.version)))
        assert versions == [1, 2]
        new = session.get(models.KnownGood, 2)
        assert new is not None and new.candidate_id == winners[0]
        promoted = session.scalars(select(models.Candidate.id).where(
            models.Candidate.state == CandidateState.PROMOTED,
            models.Candidate.base_version == 1)).all()
        assert promoted == [winners[0]]
        assert session.scalar(select(func.count()).select_from(models.AuditEvent).where(
            models.AuditEvent.action == "promote", models.AuditEvent.actor != "scheduler")) \
            <= 1


def test_a_thousand_concurrent_promotions_make_exactly_one_known_good(
    engine: Engine,
) -> None:
    clock = FakeClock()
    ids = _soaking_on_version_one(engine, clock)
    clock.advance(timedelta(minutes=5))
    if engine.dialect.name == "postgresql":
        threads, attempts = 50, 20
    else:  # SQLite has one writer at a time: a few threads show the same promise
        threads, attempts = 4, 25
    outcomes, winners = _race(engine, clock, ids, threads, attempts)
    _check_one_winner(engine, outcomes, winners, threads * attempts)
