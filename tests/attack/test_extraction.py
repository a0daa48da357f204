"""Extracting an upstream tree: hostile tar members never write outside the run's folder.

``workers.checkout.unpack`` keeps the rules of tarfile's ``data`` filter on every Python 3.11
(Debian 12's 3.11.2 has no ``filter=``). These archives are built member by member, as a hostile
``git archive`` stand-in could send them; the symlink escape through a real git repository is in
``test_injection.py``.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from workers import checkout


def _archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _file(name: str, data: bytes = b"x\n", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    (tmp_path / "tree").mkdir()
    return tmp_path / "tree"


def test_a_plain_tree_is_extracted_with_its_folders_executables_and_inner_links(
    dest: Path,
) -> None:
    checkout.unpack(_archive(_dir("bin"), _file("bin/deploy", b"#!/bin/sh\n", 0o775),
                             _file("README", b"hello\n", 0o664), _link("docs", "bin"),
                             _link("bin/again", "README", tarfile.LNKTYPE)), dest)
    assert (dest / "README").read_bytes() == b"hello\n"
    assert stat.S_IMODE((dest / "bin" / "deploy").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "README").stat().st_mode) == 0o644
    assert (dest / "docs").readlink() == Path("bin")
    assert (dest / "bin" / "again").read_bytes() == b"hello\n"


@pytest.mark.parametrize("name", ["/abs/evil", "../evil", "sub/../../evil"])
def test_a_member_named_outside_the_tree_is_refused(dest: Path, name: str) -> None:
    with pytest.raises(checkout.UnsafeMember):
        checkout.unpack(_archive(_file(name)), dest)
    assert not (dest.parent / "evil").exists()
    assert not Path("/abs/evil").exists()


@pytest.mark.parametrize("target", ["../outside", "/etc", "sub/../.."])
def test_a_symlink_leading_outside_the_tree_is_refused(dest: Path, target: str) -> None:
    with pytest.raises(checkout.UnsafeMember):
        checkout.unpack(_archive(_dir("sub"), _link("escape", target)), dest)
    assert not (dest / "escape").is_symlink()


def test_nothing_is_written_through_a_symlink_to_a_folder_outside(dest: Path) -> None:
    """The classic two-step: a link that points out, then a file below it."""
    with pytest.raises(checkout.UnsafeMember):
        checkout.unpack(_archive(_link("out", ".."), _file("out/evil")), dest)
    assert not (dest.parent / "evil").exists()


def test_a_symlink_that_a_later_link_turns_outward_is_refused(dest: Path) -> None:
    """``a -> d/../../tree/x`` stays inside while ``d`` is missing; ``d -> .`` sends it out."""
    hop = f"d/../../{dest.name}/x"
    with pytest.raises(checkout.UnsafeMember, match="resolves outside"):
        checkout.unpack(_archive(_link("a", hop), _link("d", ".")), dest)


@pytest.mark.parametrize("target", ["../outside", "/etc/passwd"])
def test_a_hard_link_to_a_file_outside_the_tree_is_refused(dest: Path, target: str) -> None:
    (dest.parent / "outside").write_text("secret\n")
    with pytest.raises(checkout.UnsafeMember):
        checkout.unpack(_archive(_link("stolen", target, tarfile.LNKTYPE)), dest)
    assert not (dest / "stolen").exists()


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(dest: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("dev")
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    with pytest.raises(checkout.UnsafeMember, match="not a file"):
        checkout.unpack(_archive((info, None)), dest)
    assert not os.path.lexists(dest / "dev")


def test_setuid_and_group_writable_bits_and_foreign_owners_are_dropped(dest: Path) -> None:
    info, data = _file("tool", b"#!/bin/sh\n", 0o6777)
    info.uid, info.gid, info.uname, info.gname = 4242, 4242, "someone", "someone"
    checkout.unpack(_archive((info, data)), dest)
    st = (dest / "tool").stat()
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_a_file_is_never_written_over_an_earlier_symlink(dest: Path) -> None:
    with pytest.raises(FileExistsError):
        checkout.unpack(_archive(_link("f", "g"), _file("f", b"evil\n")), dest)
    assert not (dest / "g").exists()
