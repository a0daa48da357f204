"""Scratch filesystems (ext4 on a loop device) and the janitor reaping what a SIGKILLed owner
left: mounts, loop devices, the controller's link and namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.requirements import needs_binary, needs_root
from workers.testbed import reaper, records
from workers.testbed.base import Testbed

from .conftest import (
    is_mounted,
    loops_of,
    our_links,
    our_namespaces,
    unique_subnet,
    unique_tag,
)

pytestmark = [pytest.mark.root, needs_root, needs_binary("ip", "losetup", "mkfs.ext4")]

MakeTestbed = Callable[..., Testbed]


def test_scratch_is_ext4_on_a_loop_device_recorded_first_and_removed(
        make_testbed: MakeTestbed, records_dir: Path) -> None:
    bed = make_testbed()
    made = bed.scratch(16 << 20)
    mount = Path(made.path)
    image = mount.with_suffix(".img")
    assert made.filesystem == "ext4-loop"
    assert mount.parent == bed.state_dir and mount.name == f"cf-scratch-{bed.tag}"
    assert is_mounted(mount)
    fstype = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", str(mount)], capture_output=True,
                            text=True, timeout=10).stdout.strip()
    assert fstype == "ext4"
    assert len(loops_of(image)) == 1
    autoclear = subprocess.run(["losetup", "-n", "-O", "AUTOCLEAR", loops_of(image)[0]],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    assert autoclear == "1"  # the loop device goes with the mount, however the mount goes
    record = records.read(records.path_for(records_dir, bed.tag))
    assert record is not None and record.scratch == (str(image),)
    # O_DIRECT works here (tmpfs would refuse it).
    written = subprocess.run(["dd", "if=/dev/zero", f"of={mount}/probe", "bs=4096", "count=16",
                              "oflag=direct"], capture_output=True, timeout=30)
    assert written.returncode == 0, written.stderr
    assert bed.scratch(1 << 20) == made  # one per host, made once

    bed.teardown()
    assert not is_mounted(mount) and loops_of(image) == []
    assert not image.exists() and not mount.exists()


# A child that builds a topology testbed linked to the controller, makes a scratch filesystem,
# starts a process in a host, prints the image path and waits to be killed.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from certifier import topology
    from workers.testbed.base import TestbedSpec
    from workers.testbed.factory import create_testbed

    tag, subnet, state, records_dir = sys.argv[1:5]
    cloud = topology.parse({"hosts": ["a", "b"], "controller": {"network": "lan"},
                            "networks": [{"name": "lan", "subnet": subnet, "links": ["a", "b"]}]})
    bed = create_testbed(TestbedSpec(name="child", topology=cloud), tag=tag,
                         state_dir=Path(state), records_dir=Path(records_dir))
    made = bed.scratch(8 << 20)
    bed.spawn(["sleep", "300"], host="b", log_path=Path(state) / "sleep.log")
    print(made.path, flush=True)
    time.sleep(300)
""")


def test_janitor_reaps_mount_loop_link_and_namespaces_of_a_sigkilled_owner(
        tmp_path: Path, records_dir: Path) -> None:
    tag = unique_tag()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, tag, unique_subnet(), str(tmp_path / "state"),
         str(records_dir)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert child.stdout is not None
    mount = Path(child.stdout.readline().strip())
    image = mount.with_suffix(".img")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=5)
    assert is_mounted(mount) and loops_of(image) and our_links(tag)
    assert len(our_namespaces(tag)) == 3

    removed = reaper.reap(records_dir, orphan_tags={tag})

    assert {f"mount {mount}", f"link cf-{tag}", f"cf-{tag}-a", f"record {tag}"} <= set(removed)
    assert not is_mounted(mount) and loops_of(image) == [] and not image.exists()
    assert our_links(tag) == [] and our_namespaces(tag) == []


def test_janitor_reaps_a_loop_device_of_ours_that_no_record_claims(tmp_path: Path,
                                                                  records_dir: Path) -> None:
    tag = unique_tag()
    image = tmp_path / f"cf-scratch-{tag}.img"
    mount = tmp_path / f"cf-scratch-{tag}"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True, timeout=10)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=30)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                          text=True, check=True, timeout=10).stdout.strip()
    subprocess.run(["mount", loop, str(mount)], check=True, timeout=10)
    foreign = tmp_path / "someone-else.img"
    subprocess.run(["truncate", "-s", "8M", str(foreign)], check=True, timeout=10)
    other = subprocess.run(["losetup", "--find", "--show", str(foreign)], capture_output=True,
                           text=True, check=True, timeout=10).stdout.strip()
    try:
        removed = reaper.reap(records_dir, orphan_tags={tag})
        assert f"loop {loop}" in removed and f"mount {mount}" in removed
        assert not is_mounted(mount) and loops_of(image) == []
        assert loops_of(foreign) == [other]  # not ours: untouched
    finally:
        subprocess.run(["losetup", "-d", other], check=False, timeout=10)
