"""The netns driver on the real kernel: hosts on a bridge, MTU, isolation, clean teardown."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.requirements import needs_binary, needs_root
from workers.testbed import netns, records
from workers.testbed.base import InfraError, Testbed, TestbedSpec
from workers.testbed.factory import create_testbed
from workers.testbed.process import pid_alive

from .conftest import our_namespaces, unique_subnet

pytestmark = [pytest.mark.root, needs_root, needs_binary("ip", "ping")]

MakeTestbed = Callable[..., Testbed]


def _ip_json(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    parsed: list[dict[str, object]] = json.loads(out or "[]")
    return parsed


def _root_links() -> set[str]:
    return {str(link["ifname"]) for link in _ip_json("link", "show")}


def test_hosts_are_namespaces_named_with_the_tag(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(hosts=("h1", "h2", "db"))
    assert sorted(our_namespaces(bed.tag)) == sorted(
        [f"cf-{bed.tag}-h1", f"cf-{bed.tag}-h2", f"cf-{bed.tag}-db", f"cf-{bed.tag}-sw"])
    assert bed.host("db").namespace == f"cf-{bed.tag}-db"
    env = bed.hook_env()
    assert env["CERTIFIER_HOST_DB_NS"] == f"cf-{bed.tag}-db"
    assert env["CERTIFIER_HOST_DB_ADDR"] == bed.host("db").address
    assert env["CERTIFIER_TESTBED_DRIVER"] == "netns"


def test_every_host_reaches_every_other(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(hosts=("h1", "h2", "h3"))
    for src in bed.hosts:
        for dst in bed.hosts:
            done = bed.run(["ping", "-c", "1", "-W", "2", dst.address], host=src.name,
                           timeout=10)
            assert done.ok, done.output


def test_addresses_and_loopback_are_up_in_each_namespace(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(subnet="198.19.77.0/24")
    links = {str(link["ifname"]): link for link in _ip_json("-n", f"cf-{bed.tag}-h2", "addr")}
    assert set(links) == {"lo", "eth0"}
    assert "UP" in links["lo"]["flags"]  # type: ignore[operator]
    addrs = [a["local"] for a in links["eth0"]["addr_info"]  # type: ignore[attr-defined]
             if a["family"] == "inet"]
    assert addrs == ["198.19.77.12"]


def test_mtu_is_applied_to_both_ends_and_the_bridge(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(mtu=1400)
    host_link = _ip_json("-n", f"cf-{bed.tag}-h1", "link", "show", "eth0")[0]
    switch = {str(link["ifname"]): link["mtu"]
              for link in _ip_json("-n", f"cf-{bed.tag}-sw", "link", "show")}
    assert host_link["mtu"] == 1400
    assert switch["h1-0"] == switch["h2-0"] == switch["br-lan"] == 1400
    # A full-size packet with fragmentation off fits; one byte more does not.
    fits = bed.run(["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372",
                    bed.host("h2").address], host="h1", timeout=10)
    too_big = bed.run(["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1373",
                       bed.host("h2").address], host="h1", timeout=10)
    assert fits.ok, fits.output
    assert not too_big.ok


def test_the_root_namespace_never_sees_a_link_of_ours(tmp_path: Path, tag: str,
                                                      records_dir: Path) -> None:
    before = _root_links()
    spec = TestbedSpec(name="t", subnet=unique_subnet())
    with create_testbed(spec, tag=tag, state_dir=tmp_path, records_dir=records_dir):
        during = _root_links()
    assert during == before == _root_links()


def test_teardown_removes_namespaces_processes_and_record(tmp_path: Path, tag: str,
                                                          records_dir: Path) -> None:
    spec = TestbedSpec(name="t", subnet=unique_subnet())
    with create_testbed(spec, tag=tag, state_dir=tmp_path, records_dir=records_dir) as bed:
        proc = bed.spawn(["sleep", "300"], host="h2", log_path=tmp_path / "sleep.log")
        assert len(our_namespaces(tag)) == 3
        assert records.path_for(records_dir, tag).exists()
    assert our_namespaces(tag) == []
    assert proc.poll() is not None
    assert not records.path_for(records_dir, tag).exists()
    bed.teardown()  # idempotent


def test_processes_started_in_a_namespace_by_others_die_too(make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    stray = subprocess.Popen(["ip", "netns", "exec", f"cf-{bed.tag}-h1", "sleep", "300"],
                             start_new_session=True)
    time.sleep(0.2)
    bed.teardown()
    stray.wait(timeout=5)
    assert our_namespaces(bed.tag) == []


def test_a_body_that_raises_still_tears_down(tmp_path: Path, tag: str,
                                            records_dir: Path) -> None:
    spec = TestbedSpec(name="t", subnet=unique_subnet())
    with pytest.raises(KeyError), create_testbed(spec, tag=tag, state_dir=tmp_path,
                                                 records_dir=records_dir):
        raise KeyError("boom")
    assert our_namespaces(tag) == []
    assert not records.path_for(records_dir, tag).exists()


def test_a_build_that_fails_halfway_leaves_nothing(tmp_path: Path, tag: str, records_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_ip = netns._ip
    calls = []

    def failing_ip(args: list[str]) -> str:
        calls.append(args)
        if len(calls) == 8:
            raise InfraError("injected failure")
        return real_ip(args)

    monkeypatch.setattr(netns, "_ip", failing_ip)
    with pytest.raises(InfraError, match="injected"):
        create_testbed(TestbedSpec(name="t", subnet=unique_subnet()), tag=tag,
                       state_dir=tmp_path, records_dir=records_dir)
    assert our_namespaces(tag) == []
    assert not records.path_for(records_dir, tag).exists()


def test_testbeds_with_different_tags_coexist(make_testbed: MakeTestbed) -> None:
    first, second = make_testbed(), make_testbed()
    for bed in (first, second):
        done = bed.run(["ping", "-c", "1", "-W", "2", bed.host("h2").address], host="h1",
                       timeout=10)
        assert done.ok, done.output
    first.teardown()
    assert our_namespaces(first.tag) == []
    assert len(our_namespaces(second.tag)) == 3
    # Different testbeds are different networks: the first's h2 address is not reachable.
    done = second.run(["ping", "-c", "1", "-W", "1", first.host("h2").address], host="h1",
                      timeout=10)
    assert not done.ok


def test_destroy_refuses_names_outside_our_prefix() -> None:
    with pytest.raises(ValueError, match="outside the cf- prefix"):
        netns.destroy_namespaces(["default", "cf-ok-h1"])


def test_spawned_pid_is_gone_after_teardown(make_testbed: MakeTestbed, tmp_path: Path) -> None:
    bed = make_testbed()
    proc = bed.spawn(["sleep", "300"], host="h1", log_path=tmp_path / "x.log")
    pid = proc.pid
    bed.teardown()
    assert not pid_alive(pid)
