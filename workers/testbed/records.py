"""On-disk records of live testbeds: what the janitor needs to clean up after a SIGKILL.

A record is written *before* the first namespace is created and removed only after the last one
is gone, so at any moment every ``cf-`` object on the host is either described by a record or
an orphan of a dead process. One JSON file per tag, replaced atomically so a crash never leaves
half a record.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workers.testbed.process import pid_alive, start_ticks


@dataclass(frozen=True, slots=True)
class Record:
    """Who owns a testbed and what it is made of."""

    tag: str
    testbed: str
    driver: str
    namespaces: tuple[str, ...]
    cookie: str
    owner_pid: int
    owner_ticks: int | None
    created: float = field(default_factory=time.time)

    def owner_alive(self) -> bool:
        """The owner still runs; a reused pid with another start time does not count."""
        return pid_alive(self.owner_pid, self.owner_ticks)


def new_record(*, tag: str, testbed: str, driver: str, namespaces: tuple[str, ...],
               cookie: str) -> Record:
    """A record owned by the calling process."""
    pid = os.getpid()
    return Record(tag=tag, testbed=testbed, driver=driver, namespaces=namespaces, cookie=cookie,
                  owner_pid=pid, owner_ticks=start_ticks(pid))


def path_for(records_dir: Path, tag: str) -> Path:
    return records_dir / f"{tag}.json"


def write(records_dir: Path, record: Record) -> Path:
    """Write ``record`` atomically (temp file, fsync, rename)."""
    records_dir.mkdir(parents=True, exist_ok=True)
    target = path_for(records_dir, record.tag)
    temp = target.with_suffix(f".tmp{os.getpid()}")
    data = asdict(record)
    data["namespaces"] = list(record.namespaces)
    with temp.open("w") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(target)
    return target


def read(path: Path) -> Record | None:
    """The record in ``path``; None when it is missing or not a record of ours."""
    try:
        data = json.loads(path.read_text())
        return Record(tag=str(data["tag"]), testbed=str(data["testbed"]),
                      driver=str(data["driver"]),
                      namespaces=tuple(str(n) for n in data["namespaces"]),
                      cookie=str(data["cookie"]), owner_pid=int(data["owner_pid"]),
                      owner_ticks=(None if data.get("owner_ticks") is None
                                   else int(data["owner_ticks"])),
                      created=float(data["created"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_all(records_dir: Path) -> dict[Path, Record | None]:
    """Every record file in ``records_dir``; unreadable ones map to None."""
    if not records_dir.is_dir():
        return {}
    return {path: read(path) for path in sorted(records_dir.glob("*.json"))}


def remove(records_dir: Path, tag: str) -> None:
    path_for(records_dir, tag).unlink(missing_ok=True)
