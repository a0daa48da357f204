"""The ``local`` driver: every host is this machine on 127.0.0.1, for machines without root.

It keeps the pipeline and the suites runnable on a laptop or an unprivileged CI runner, at the
price of realism: there is no link between hosts to shape or cut, so recipes that change
routing or traffic shaping have no effect. ``notice`` says so, and the runner puts it in the run
log so nobody mistakes a loopback number for a testbed number.
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.testbed.base import Host, Testbed, TestbedSpec

LOOPBACK = "127.0.0.1"


class LocalTestbed(Testbed):
    """Hosts are names only: ``run(host=...)`` runs directly on this machine."""

    driver = "local"

    def __init__(self, spec: TestbedSpec, *, tag: str, state_dir: Path,
                 records_dir: Path) -> None:
        super().__init__(spec, tag=tag, state_dir=state_dir, records_dir=records_dir)
        why = " (not root)" if os.geteuid() != 0 else ""
        self.notice = f"local driver: loopback only, no namespaces{why}"

    def _make_hosts(self) -> tuple[Host, ...]:
        return tuple(Host(name, LOOPBACK, None) for name in self.spec.hosts)

    @property
    def interface(self) -> str:
        return "lo"

    def _build(self) -> None:
        """Nothing to build: the record alone lets the janitor reap our processes."""

    def _destroy(self) -> None:
        """Nothing to remove beyond the processes, which teardown has already killed."""
