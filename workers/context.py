"""What every task needs, built once per process from the one Settings object.

The engine is created lazily in the process that uses it (after Celery forks its pool), never at
import time, so tests can build a context from their own settings without patching globals.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from certifier.db.session import make_engine, make_session_factory
from certifier.domain.clock import Clock, SystemClock
from certifier.pipeline.dispatch import Dispatcher, NullDispatcher
from certifier.pipeline.scheduler import SchedulerPolicy
from certifier.settings import Settings


@dataclass
class WorkerContext:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    dispatcher: Dispatcher = field(default_factory=NullDispatcher)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.resolved_database_url)

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @property
    def scheduler_policy(self) -> SchedulerPolicy:
        return self.settings.scheduler_policy()

    @property
    def worker_id(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def after_fork(self) -> None:
        """Forget connections inherited from the parent process (they belong to it)."""
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)
