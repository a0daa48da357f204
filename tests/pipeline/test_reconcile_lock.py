"""Two reconcile passes never interleave: the second waits until the first has committed.

On SQLite (the embedded default, where a worker's two pool processes run passes side by side)
this is the write lock the pass takes before it reads; without it both passes once promoted the
same candidate and the loser marked the new known-good's candidate superseded.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy.orm import Session

from certifier.db import migrate
from certifier.db.session import make_engine
from certifier.pipeline import toolbox


def test_a_second_pass_on_sqlite_waits_for_the_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'certifier.sqlite'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    events: list[str] = []
    try:
        first = Session(engine)
        toolbox.pass_lock(first)  # the first pass holds the lock...

        def second_pass() -> None:
            with Session(engine) as second:
                toolbox.pass_lock(second)
                events.append("second locked")
                second.commit()

        thread = threading.Thread(target=second_pass)
        thread.start()
        time.sleep(0.5)
        events.append("first commits")
        first.commit()  # ...until it commits
        first.close()
        thread.join(timeout=10)
        assert events == ["first commits", "second locked"]
    finally:
        engine.dispose()
