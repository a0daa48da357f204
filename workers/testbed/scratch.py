"""Scratch filesystems: an ext4 on a loop device, in a file in the testbed's state folder.

fio with ``direct=1`` needs a filesystem that accepts O_DIRECT (tmpfs refuses it) and one that is
the same from run to run, whatever the worker's own disk is formatted with. So the testbed makes
one: a sparse image file, ``mkfs.ext4`` (no journal, 4 KiB blocks), a loop device with direct I/O
to its backing file (so the host's page cache is not measured twice), mounted next to the image;
the loop device is set to clear itself when that mount goes.

Names carry the tag — ``cf-scratch-<tag>.img`` mounted on ``cf-scratch-<tag>`` — and the image
is in the testbed's record before it exists, so the janitor can find the mount and the loop
device of a SIGKILLed owner: the loop device from the image (``losetup -j``), the mount point
from the image's name. Commands go through a ``run`` callable, so the same code works on the
worker's machine and, over SSH, on a remote host.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

from workers.testbed.process import CommandResult, InfraError

IMAGE_RE = re.compile(r"^cf-scratch-([a-z0-9]{1,12})\.img$")
STEP_TIMEOUT = 60.0
HEADROOM = 16 * 1024 * 1024  # ext4 metadata and fio's own files

Runner = Callable[[list[str]], CommandResult]


def ours(path: str, tag: str) -> bool:
    """Whether ``path`` (from a record) is an absolute path to ``tag``'s scratch image: a
    record is trusted only as far as our own naming goes."""
    match = IMAGE_RE.match(PurePosixPath(path).name)
    return match is not None and match.group(1) == tag and path.startswith("/")


def image_path(folder: PurePosixPath, tag: str) -> PurePosixPath:
    return folder / f"cf-scratch-{tag}.img"


def mount_point(image: PurePosixPath) -> PurePosixPath:
    """The folder an image is mounted on: its path without ``.img``."""
    if not IMAGE_RE.match(image.name):
        raise ValueError(f"not a scratch image of ours: {image}")
    return image.with_suffix("")


def image_size(data_bytes: int) -> int:
    """Room for ``data_bytes`` of fio data plus metadata, rounded up to a MiB."""
    size = int(data_bytes * 1.1) + HEADROOM
    return -(-size // (1 << 20)) << 20


def _must(run: Runner, argv: list[str]) -> CommandResult:
    done = run(argv)
    if not done.ok:
        raise InfraError(f"{' '.join(argv)} failed: "
                         f"{(done.stderr or done.stdout).strip()[:300] or done.returncode}", done)
    return done


def create(run: Runner, image: PurePosixPath, size_bytes: int) -> str:
    """Make, attach and mount the filesystem; returns the loop device. The caller has recorded
    ``image`` already, and calls :func:`release` whatever happens."""
    mount = mount_point(image)
    _must(run, ["mkdir", "-p", str(mount)])
    _must(run, ["truncate", "-s", str(size_bytes), str(image)])
    _must(run, ["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-O", "^has_journal",
                "-E", "nodiscard,lazy_itable_init=1", str(image)])
    device = _must(run, ["losetup", "--find", "--show", "--direct-io=on", str(image)])
    loop = device.stdout.strip()
    if not loop.startswith("/dev/loop"):
        raise InfraError(f"losetup printed no loop device: {device.output.strip()[:200]}")
    _must(run, ["mount", "-t", "ext4", "-o", "noatime", loop, str(mount)])
    # Detaching a loop device in use only marks it "autoclear": it goes by itself with its
    # last user, the mount — also when that mount dies with a mount namespace (a remote sshd).
    run(["losetup", "-d", loop])
    return loop


def loops_of(run: Runner, image: PurePosixPath) -> list[str]:
    """Loop devices backed by ``image`` (``losetup -j`` prints ``/dev/loop3: []: (/path)``)."""
    done = run(["losetup", "-j", str(image)])
    if not done.ok:
        return []
    return [line.split(":", 1)[0] for line in done.stdout.splitlines()
            if line.startswith("/dev/loop")]


def release(run: Runner, image: PurePosixPath) -> list[str]:
    """Unmount, detach and delete a scratch filesystem; returns what was removed.

    Copes with every half-built state (nothing mounted, no loop device, no image). Raises
    InfraError when the mount or the loop device will not go, so the record is kept and the
    janitor retries.
    """
    mount = mount_point(image)
    removed: list[str] = []
    done = run(["umount", str(mount)])
    if done.ok:
        removed.append(f"mount {mount}")
    elif "busy" in done.stderr:
        _must(run, ["umount", "-l", str(mount)])
        removed.append(f"mount {mount} (lazily)")
    for loop in loops_of(run, image):
        _must(run, ["losetup", "-d", loop])
        removed.append(f"loop {loop}")
    run(["rm", "-f", str(image)])
    run(["rmdir", str(mount)])
    return removed
