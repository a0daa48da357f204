"""Commit links to upstream forges: built only where the URL pattern is known, never unsafe."""

from __future__ import annotations

import pytest

from certifier.web.links import commit_url

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(("source", "url", "expected"), [
    ("github", "https://github.com/openstack/neutron.git",
     f"https://github.com/openstack/neutron/commit/{SHA}"),
    ("git", "https://github.com/openstack/neutron", f"https://github.com/openstack/neutron/commit/{SHA}"),
    ("gitlab", "https://gitlab.example.org/group/sub/proj.git",
     f"https://gitlab.example.org/group/sub/proj/-/commit/{SHA}"),
    ("git", "https://gitlab.com/openstack/cinder.git",
     f"https://gitlab.com/openstack/cinder/-/commit/{SHA}"),
    ("git", "https://opendev.org/openstack/nova.git", f"https://opendev.org/openstack/nova/commit/{SHA}"),
    ("gerrit", "https://review.example.org/openstack/nova", f"https://review.example.org/q/{SHA}"),
    ("git", "https://user:secret@github.com/o/r.git", f"https://github.com/o/r/commit/{SHA}"),
    ("git", "http://git.example:8080/o/r.git", None),  # an unknown forge: the bare sha
])
def test_known_forges_get_commit_links(source: str, url: str, expected: str | None) -> None:
    assert commit_url(source, url, SHA) == expected


@pytest.mark.parametrize("url", [
    "/srv/git/nova.git", "file:///srv/git/nova.git", "git@github.com:o/r.git",
    "javascript:alert(1)//github.com/o/r", "https://github.com/o/r\"><script>", "https://[::1",
    "https://github.com/../../etc",
])
def test_anything_else_gets_no_link(url: str) -> None:
    assert commit_url("github", url, SHA) is None


def test_a_malformed_sha_gets_no_link() -> None:
    assert commit_url("github", "https://github.com/o/r", "abc/../x") is None
