"""On-disk records of live testbeds: what the janitor needs to clean up after a SIGKILL.

A record is written *before* the first object is created and removed only after the last one is
gone, so at any moment every ``cf-`` object on the host is either described by a record or an
orphan of a dead process. Objects created later in a testbed's life (a scratch filesystem for
fio) are added to the record before they are created. One JSON file per tag, replaced atomically
so a crash never leaves half a record.

What a record lists: namespaces; links in the root namespace (only when a topology links the
controller to a network); scratch filesystem images (their mount point is the image path without
``.img``; the loop device is found from the image); and, for the ``ssh`` driver, how to reach
each remote host and the folder there that holds everything the testbed made on it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from workers.testbed.process import pid_alive, start_ticks


@dataclass(frozen=True, slots=True)
class RemoteHost:
    """A remote host of an ``ssh`` testbed: the ssh command prefix and our folder there."""

    host: str
    ssh: tuple[str, ...]
    folder: str


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
    links: tuple[str, ...] = ()
    scratch: tuple[str, ...] = ()
    remote: tuple[RemoteHost, ...] = ()

    def owner_alive(self) -> bool:
        """The owner still runs; a reused pid with another start time does not count."""
        return pid_alive(self.owner_pid, self.owner_ticks)

    def adding(self, *, scratch: str | None = None, remote: RemoteHost | None = None) -> Record:
        """This record with one more object listed."""
        record = self
        if scratch is not None and scratch not in record.scratch:
            record = replace(record, scratch=(*record.scratch, scratch))
        if remote is not None and remote not in record.remote:
            record = replace(record, remote=(*record.remote, remote))
        return record


def new_record(*, tag: str, testbed: str, driver: str, namespaces: tuple[str, ...],
               cookie: str, links: tuple[str, ...] = ()) -> Record:
    """A record owned by the calling process."""
    pid = os.getpid()
    return Record(tag=tag, testbed=testbed, driver=driver, namespaces=namespaces, cookie=cookie,
                  owner_pid=pid, owner_ticks=start_ticks(pid), links=links)


def path_for(records_dir: Path, tag: str) -> Path:
    return records_dir / f"{tag}.json"


def write(records_dir: Path, record: Record) -> Path:
    """Write ``record`` atomically (temp file, fsync, rename)."""
    records_dir.mkdir(parents=True, exist_ok=True)
    target = path_for(records_dir, record.tag)
    temp = target.with_suffix(f".tmp{os.getpid()}")
    data = asdict(record)
    with temp.open("w") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(target)
    return target


def _strings(data: dict[str, Any], key: str) -> tuple[str, ...]:
    return tuple(str(item) for item in data.get(key) or ())


def read(path: Path) -> Record | None:
    """The record in ``path``; None when it is missing or not a record of ours.

    Records written before a field existed read with that field empty.
    """
    try:
        data = json.loads(path.read_text())
        remote = tuple(RemoteHost(host=str(r["host"]), ssh=tuple(str(a) for a in r["ssh"]),
                                  folder=str(r["folder"]))
                       for r in data.get("remote") or ())
        return Record(tag=str(data["tag"]), testbed=str(data["testbed"]),
                      driver=str(data["driver"]), namespaces=_strings(data, "namespaces"),
                      cookie=str(data["cookie"]), owner_pid=int(data["owner_pid"]),
                      owner_ticks=(None if data.get("owner_ticks") is None
                                   else int(data["owner_ticks"])),
                      created=float(data["created"]), links=_strings(data, "links"),
                      scratch=_strings(data, "scratch"), remote=remote)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_all(records_dir: Path) -> dict[Path, Record | None]:
    """Every record file in ``records_dir``; unreadable ones map to None."""
    if not records_dir.is_dir():
        return {}
    return {path: read(path) for path in sorted(records_dir.glob("*.json"))}


def remove(records_dir: Path, tag: str) -> None:
    path_for(records_dir, tag).unlink(missing_ok=True)
