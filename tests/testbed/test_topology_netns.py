"""Topologies on the real kernel: L2 networks, routing through a network node that a test can
take down, VXLAN/GRE overlays at their exact MTU, shaped links, the controller's link, and
nothing left behind whatever happens."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certifier import topology as topo
from tests.requirements import needs_binary, needs_root
from workers.suites import bandwidth, ping
from workers.testbed import netns, records
from workers.testbed.base import CommandResult, InfraError, Testbed, TestbedError, TestbedSpec
from workers.testbed.factory import create_testbed

from .conftest import (
    kernel_has,
    our_links,
    our_namespaces,
    unique_subnet,
    unique_tag,
)

pytestmark = [pytest.mark.root, needs_root, needs_binary("ip", "ping", "bridge", "tc")]

MakeTestbed = Callable[..., Testbed]


def _cloud(overlay: str = "vxlan", data_mtu: int = 1500, **extra: Any) -> topo.TopologyConfig:
    mgmt, data, tenant = unique_subnet(), unique_subnet(), unique_subnet()
    raw: dict[str, Any] = {
        "hosts": ["control", {"name": "netnode", "router": True}, "compute1", "compute2"],
        "networks": [
            {"name": "mgmt", "subnet": mgmt, "links": ["control", "netnode"]},
            {"name": "data", "subnet": data, "mtu": data_mtu,
             "links": ["netnode", "compute1", "compute2"]},
        ],
        "overlays": [{"name": "tenant", "type": overlay, "id": 1001, "underlay": "data",
                      "subnet": tenant, "hosts": ["compute1", "compute2"]}],
        **extra,
    }
    return topo.parse(raw)


def _ping(bed: Testbed, src: str, address: str, *, size: int | None = None,
          count: int = 2) -> bool:
    """Does any of ``count`` pings get an answer (one lost to ARP on a busy host is fine)?"""
    argv = ["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "1"]
    if size is not None:
        argv += ["-M", "do", "-s", str(size)]
    return bed.run([*argv, address], host=src, timeout=15).ok


def _addr(bed: Testbed, host: str, net: str) -> str:
    return bed.host_networks(host)[net][0]


def test_hosts_on_an_l2_network_reach_each_other(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(topology=topo.parse({
        "hosts": ["web", "db", "cache"],
        "networks": [{"name": "lan", "subnet": unique_subnet(), "links": ["web", "db", "cache"]}],
    }))
    for src in bed.hosts:
        for dst in bed.hosts:
            assert _ping(bed, src.name, dst.address), (src, dst)
    assert sorted(our_namespaces(bed.tag)) == sorted(
        f"cf-{bed.tag}-{n}" for n in ("web", "db", "cache", "sw"))


def test_hooks_see_every_network_of_every_host(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(topology=_cloud())
    env = bed.hook_env()
    assert env["CERTIFIER_NETWORKS"] == "mgmt data tenant"
    assert env["CERTIFIER_ROUTERS"] == "netnode"
    assert env["CERTIFIER_HOST_NETNODE_DATA_IFACE"] == "eth1"
    assert env["CERTIFIER_HOST_COMPUTE1_TENANT_IFACE"] == "vx-tenant"
    assert env["CERTIFIER_HOST_COMPUTE1_TENANT_ADDR"] == _addr(bed, "compute1", "tenant")
    assert env["CERTIFIER_HOST_CONTROL_ADDR"] == _addr(bed, "control", "mgmt")
    done = bed.run(["sh", "-c", "echo $CERTIFIER_HOST_COMPUTE2_DATA_ADDR"], timeout=5,
                   env=env)
    assert done.stdout.strip() == _addr(bed, "compute2", "data")


def test_routed_hosts_reach_each_other_through_the_network_node_and_not_without_it(
        make_testbed: MakeTestbed) -> None:
    bed = make_testbed(topology=_cloud())
    far = _addr(bed, "compute1", "data")
    assert _ping(bed, "control", far)
    hops = bed.run(["ip", "route", "get", far], host="control", timeout=5).stdout
    assert f"via {_addr(bed, 'netnode', 'mgmt')}" in hops

    bed.set_node("netnode", up=False)
    assert not _ping(bed, "control", far, count=2)
    assert _ping(bed, "compute2", far)  # same network: no router needed

    bed.set_node("netnode", up=True)
    assert _ping(bed, "control", far, count=3)


def test_the_ping_suite_loses_routed_pairs_when_the_router_is_down(
        make_testbed: MakeTestbed) -> None:
    bed = make_testbed(topology=_cloud())
    healthy = ping.run(bed, ping.PingOptions(count=3, interval=0.02))
    assert healthy.infra_error is None, healthy.log
    assert all(c.passed for c in healthy.checks), [c for c in healthy.checks if not c.passed]
    names = {c.name for c in healthy.checks}
    assert {"reach control->compute1 via routed", "reach compute1->compute2 via tenant",
            "mtu compute1->compute2 via tenant", "reach netnode->compute2 via data"} <= names

    bed.set_node("netnode", up=False)
    cut = ping.run(bed, ping.PingOptions(count=2, interval=0.02, mtu_check=False))
    failed = {c.name for c in cut.checks if not c.passed}
    assert "reach control->compute2 via routed" in failed
    assert "reach compute1->compute2 via tenant" not in failed


def test_a_link_taken_down_cuts_only_that_network(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(topology=_cloud())
    bed.set_link("compute1", "data", up=False)
    assert not _ping(bed, "compute2", _addr(bed, "compute1", "data"))
    assert _ping(bed, "netnode", _addr(bed, "control", "mgmt"))
    bed.set_link("compute1", "data", up=True)
    assert _ping(bed, "compute2", _addr(bed, "compute1", "data"), count=3)
    assert _ping(bed, "compute1", _addr(bed, "control", "mgmt"))  # its route came back
    with pytest.raises(TestbedError, match="no link to 'mgmt'"):
        bed.set_link("compute1", "mgmt", up=False)


def _mtu_boundary(bed: Testbed, overhead: int, ifname: str) -> None:
    overlay_mtu = 1500 - overhead
    far = _addr(bed, "compute2", "tenant")
    link = json.loads(bed.run(["ip", "-j", "link", "show", ifname], host="compute1",
                              timeout=5).stdout)[0]
    assert link["mtu"] == overlay_mtu
    assert _ping(bed, "compute1", far, size=overlay_mtu - 28)
    assert not _ping(bed, "compute1", far, size=overlay_mtu - 27)
    # The accounting is exact: one byte more on the overlay no longer fits the underlay.
    for host in ("compute1", "compute2"):
        assert bed.run(["ip", "link", "set", ifname, "mtu", str(overlay_mtu + 1)], host=host,
                       timeout=5).ok
    assert not _ping(bed, "compute1", far, size=overlay_mtu - 27, count=2)


def test_vxlan_overlay_mtu_is_the_underlay_minus_50_bytes(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(topology=_cloud("vxlan"))
    details = bed.run(["ip", "-d", "-j", "link", "show", "vx-tenant"], host="compute1",
                      timeout=5).stdout
    info = json.loads(details)[0]["linkinfo"]["info_data"]
    assert (info["id"], info["port"]) == (1001, 4789)
    _mtu_boundary(bed, 50, "vx-tenant")


def _refused_cleanly(make_testbed: MakeTestbed, topology: topo.TopologyConfig,
                     message: str) -> None:
    """On a kernel without the feature: a clear infra error, and nothing left behind."""
    before = set(netns.list_namespaces())
    with pytest.raises(InfraError, match=re.escape(message)):
        make_testbed(topology=topology)
    assert {n for n in netns.list_namespaces() if n.startswith("cf-")} <= before


def test_gre_overlay_mtu_is_the_underlay_minus_42_bytes(make_testbed: MakeTestbed) -> None:
    # Both branches are real: CI machines differ in kernel configuration, not in our code.
    if not kernel_has("gretap"):
        _refused_cleanly(make_testbed, _cloud("gre"), "this kernel lacks GRE tunnels")
        return
    _mtu_boundary(make_testbed(topology=_cloud("gre")), 42, "gt-tenant")


@needs_binary("iperf3", "ss")
def test_tc_rate_shaping_measurably_lowers_throughput(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(topology=topo.parse({
        "hosts": ["src", "free", "tbf", "htb"],
        "networks": [{"name": "lan", "subnet": unique_subnet(), "links": [
            "src", "free", {"host": "tbf", "rate": "100mbit"},
            {"host": "htb", "rate": "200mbit", "shaper": "htb"}]}],
    }))
    options = bandwidth.BandwidthOptions(
        duration_s=1, pairs=("src->free", "src->tbf", "htb->src"), reverse=False,
        parallel_streams=0, udp_rate_mbit=0)
    res = bandwidth.run(bed, options)
    assert res.infra_error is None, res.log
    rate = {(m.labels["src"], m.labels["dst"]): m.value for m in res.measurements
            if m.metric == "throughput_gbps"}
    assert rate[("src", "free")] > 1.0
    assert 0.05 < rate[("src", "tbf")] < 0.12  # shaped where it arrives: the switch side
    assert 0.12 < rate[("htb", "src")] < 0.22  # shaped where it leaves: the host side
    qdiscs = bed.run(["tc", "qdisc", "show", "dev", "eth0"], host="tbf", timeout=5).stdout
    assert re.search(r"qdisc tbf 1: root .*rate 100Mbit", qdiscs)


def test_netem_delay_raises_the_round_trip_time(make_testbed: MakeTestbed) -> None:
    delayed = topo.parse({
        "hosts": ["a", "b", "c"],
        "networks": [{"name": "lan", "subnet": unique_subnet(), "links": [
            "a", "b", {"host": "c", "delay": "20ms"}]}],
    })
    if not kernel_has("netem"):
        _refused_cleanly(make_testbed, delayed, "this kernel lacks netem")
        return
    bed = make_testbed(topology=delayed)
    res = ping.run(bed, ping.PingOptions(count=5, interval=0.05))
    rtt = {(m.labels["src"], m.labels["dst"]): m.value for m in res.measurements
           if m.metric == "rtt_min_ms"}
    assert rtt[("a", "b")] < 5
    assert 39 < rtt[("a", "c")] < 60  # 20 ms each way


def test_testbeds_with_the_same_topology_coexist(make_testbed: MakeTestbed) -> None:
    cloud = _cloud()
    first, second = make_testbed(topology=cloud), make_testbed(topology=cloud)
    far = _addr(first, "compute1", "data")
    assert _ping(first, "control", far) and _ping(second, "control", far)
    first.teardown()
    assert our_namespaces(first.tag) == []
    assert _ping(second, "compute2", _addr(second, "compute1", "tenant"))


def test_the_controller_link_is_recorded_reachable_and_removed(tmp_path: Path,
                                                                records_dir: Path) -> None:
    tag = unique_tag()
    cloud = _cloud(controller={"network": "mgmt"})
    with create_testbed(TestbedSpec(name="t", topology=cloud), tag=tag, state_dir=tmp_path,
                        records_dir=records_dir) as bed:
        assert our_links(tag) == [f"cf-{tag}"]
        record = records.read(records.path_for(records_dir, tag))
        assert record is not None and record.links == (f"cf-{tag}",)
        here = subprocess.run(["ping", "-c", "1", "-W", "2", _addr(bed, "control", "mgmt")],
                              capture_output=True, timeout=10)
        assert here.returncode == 0
        # A second testbed on the same subnet would clash in the root namespace: refused.
        with pytest.raises(TestbedError, match="overlaps"):
            create_testbed(TestbedSpec(name="t2", topology=cloud), tag=unique_tag(),
                           state_dir=tmp_path / "2", records_dir=records_dir)
    assert our_links(tag) == [] and our_namespaces(tag) == []


def test_an_invalid_topology_creates_nothing(tmp_path: Path, records_dir: Path) -> None:
    tag = unique_tag()
    raw = {"hosts": ["a", "b"], "networks": [
        {"name": "lan", "subnet": "198.19.1.0/24", "links": ["a", "b"]},
        {"name": "wan", "subnet": "198.19.1.128/25", "links": ["a", "b"]}]}
    with pytest.raises(TestbedError, match="overlapping"):
        create_testbed(TestbedSpec(name="t", topology=topo.TopologyConfig.model_validate(raw)),
                       tag=tag, state_dir=tmp_path, records_dir=records_dir)
    assert our_namespaces(tag) == []
    assert not records.path_for(records_dir, tag).exists()


def test_a_build_failing_at_the_overlay_leaves_nothing(tmp_path: Path, records_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    tag = unique_tag()
    real_tool = netns._tool

    def failing(argv: list[str], kind: str | None = None) -> None:
        if "vxlan" in argv:
            raise InfraError("injected: no vxlan")
        real_tool(argv, kind)

    monkeypatch.setattr(netns, "_tool", failing)
    with pytest.raises(InfraError, match="injected"):
        create_testbed(TestbedSpec(name="t", topology=_cloud(controller={"network": "mgmt"})),
                       tag=tag, state_dir=tmp_path, records_dir=records_dir)
    assert our_namespaces(tag) == [] and our_links(tag) == []
    assert not records.path_for(records_dir, tag).exists()


@pytest.mark.parametrize(("kind", "stderr", "says"), [
    ("netem", "Error: Specified qdisc kind is unknown.", "lacks netem (CONFIG_NET_SCH_NETEM)"),
    ("gretap", "Error: Unknown device type.", "lacks GRE tunnels (CONFIG_NET_IPGRE)"),
])
def test_a_missing_kernel_feature_is_an_infra_error_that_says_so(kind: str, stderr: str,
                                                                  says: str) -> None:
    done = CommandResult(("tc",), 2, "", stderr, False, 0.01)
    assert says in str(netns.tool_error(["tc", "qdisc", "add"], done, kind))
