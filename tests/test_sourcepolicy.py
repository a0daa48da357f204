"""The source URL policy (``sources`` in the config): which URLs components may name.

The same rules hold for the config file (a clear error when it loads) and the API (tested in
tests/api/test_component_admin.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from certifier.demo import world as demo_world
from certifier.settings import ConfigError, load_config_file, parse_config_text
from certifier.sourcepolicy import SourcePolicy, SourceRefused

DEFAULT = SourcePolicy()


@pytest.mark.parametrize("url", ["https://opendev.org/openstack/nova.git",
                                 "ssh://git@gitlab.example.org/grp/nova.git",
                                 "git@github.com:org/nova.git",
                                 "https://[2001:4860:4860::8888]/nova.git"])
def test_the_default_policy_allows_https_and_ssh_to_public_hosts(url: str) -> None:
    DEFAULT.check_url(url)


@pytest.mark.parametrize(("url", "rule"), [
    ("http://git.example.org/nova.git", "scheme 'http'"),
    ("git://git.example.org/nova.git", "scheme 'git'"),
    ("https://localhost/nova.git", "local or private host"),
    ("https://svc.localhost/nova.git", "local or private host"),
    ("https://192.168.1.10/nova.git", "local or private host"),
    ("https://100.64.0.1/nova.git", "local or private host"),
    ("https://[::ffff:127.0.0.1]/nova.git", "local or private host"),
    ("https://0x7f.1/nova.git", "local or private host"),
    ("https://017700000001/nova.git", "local or private host"),
    ("git@127.0.0.1:grp/nova.git", "local or private host"),
    ("/srv/git/nova.git", "local paths and file:// URLs are not allowed"),
    ("file:///srv/git/nova.git", "local paths and file:// URLs are not allowed"),
    ("https:///nova.git", "names no host"),
])
def test_the_default_policy_refuses_clear_text_private_and_local_sources(
    url: str, rule: str,
) -> None:
    with pytest.raises(SourceRefused, match=rule):
        DEFAULT.check_url(url)


def test_a_name_that_only_looks_numeric_is_a_public_host() -> None:
    DEFAULT.check_url("https://cafe.be/nova.git")


def test_a_hosts_list_allows_exactly_its_hosts_and_their_subdomains() -> None:
    policy = SourcePolicy(hosts=("git.example.org", "*.corp.example", "10.0.0.5"))
    policy.check_url("https://git.example.org/nova.git")
    policy.check_url("https://gitlab.corp.example/nova.git")
    policy.check_url("https://10.0.0.5/nova.git")  # listed: allowed although private
    for url in ("https://github.com/org/nova.git", "https://corp.example.evil/nova.git"):
        with pytest.raises(SourceRefused, match=r"not in the config's sources\.hosts"):
            policy.check_url(url)


def test_an_api_url_is_never_a_local_path() -> None:
    policy = SourcePolicy(local_paths=(Path("/srv"),))
    with pytest.raises(SourceRefused, match="api_url: must be a URL"):
        policy.check_component("/srv/nova.git", "/srv/api")
    with pytest.raises(SourceRefused, match="api_url: a file URL"):
        policy.check_component("/srv/nova.git", "file:///srv/api")


def test_local_paths_allow_only_what_is_under_them(tmp_path: Path) -> None:
    allowed = tmp_path / "upstream"
    (allowed / "nova").mkdir(parents=True)
    (allowed / "escape").symlink_to(tmp_path / "elsewhere")
    policy = SourcePolicy(local_paths=(allowed,))
    policy.check_url(str(allowed / "nova"))
    policy.check_url(f"file://{allowed / 'not-yet-there.git'}")
    for url, rule in ((str(allowed / ".." / "elsewhere"), "not under a folder"),
                      (str(allowed / "escape"), "not under a folder"),
                      ("upstream/nova", "must be absolute"),
                      (f"file://host{allowed}/nova", "a file URL names no host")):
        with pytest.raises(SourceRefused, match=rule):
            policy.check_url(url)


def test_a_refused_url_in_the_config_file_is_an_error_naming_the_component_and_line() -> None:
    text = ("components:\n"
            "  - name: nova\n"
            "    url: https://opendev.org/openstack/nova.git\n"
            "  - name: quiet\n"
            "    url: http://10.1.2.3/quiet.git\n")
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, "certifier.yaml")
    assert str(caught.value) == (
        "certifier.yaml: components.1 (line 5): url: the scheme 'http' is not allowed by the "
        "config's sources.schemes (https, ssh)")


def test_relative_local_paths_are_under_the_config_files_folder(tmp_path: Path) -> None:
    config = tmp_path / "certifier.yaml"
    config.write_text(f"sources: {{local_paths: [repos]}}\n"
                      f"components:\n  - {{name: nova, url: '{tmp_path / 'repos' / 'nova'}'}}\n")
    assert load_config_file(config).sources.local_paths == (tmp_path / "repos",)


def test_the_demo_worlds_config_allows_its_own_upstream_folder(tmp_path: Path) -> None:
    world = demo_world.build(tmp_path / "demo", driver="local")
    config = load_config_file(world.config_file)
    assert {c.url for c in config.components} == {str(p) for p in world.repos.values()}
