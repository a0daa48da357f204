"""The testbed factory: the one module that knows every driver.

The drivers import ``base`` for the interface; only this module imports the drivers, so there is
no import circle between the interface and its implementations.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from workers.testbed import reaper
from workers.testbed.base import TAG_RE, Testbed, TestbedError, TestbedSpec
from workers.testbed.local import LocalTestbed
from workers.testbed.netns import NetnsTestbed
from workers.testbed.process import require_binary
from workers.testbed.ssh import SshTestbed

log = logging.getLogger(__name__)


def create_testbed(spec: TestbedSpec, *, tag: str, state_dir: Path,
                   records_dir: Path) -> Testbed:
    """Build the testbed ``spec`` describes, named with ``tag``; use it in a ``with`` block.

    Raises TestbedError for requests that cannot work (bad tag, netns without root: the caller
    decides whether to fall back to ``local``) and InfraError when building fails; in both
    cases nothing is left behind.
    """
    if not TAG_RE.match(tag):
        raise TestbedError(f"testbed tag {tag!r} must be 1-12 lower-case letters or digits "
                           "(it is part of every namespace and interface name)")
    bed: Testbed
    if spec.driver == "netns":
        if os.geteuid() != 0:
            raise TestbedError("the netns driver needs root (network namespaces); "
                               "use the 'local' driver on this machine")
        require_binary("ip")
        bed = NetnsTestbed(spec, tag=tag, state_dir=state_dir, records_dir=records_dir)
    elif spec.driver == "ssh":
        require_binary("ssh")
        bed = SshTestbed(spec, tag=tag, state_dir=state_dir, records_dir=records_dir)
    else:
        bed = LocalTestbed(spec, tag=tag, state_dir=state_dir, records_dir=records_dir)
    reaper.clear_tag(records_dir, tag)
    try:
        bed.setup()
    except BaseException:
        try:
            bed.teardown()
        except Exception:
            log.exception("cleanup after a failed build of %s (tag %s) failed", spec.name, tag)
        raise
    return bed
