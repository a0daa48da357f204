"""Topologies are checked completely, and explained, before anything is created.

These tests need no root: a bad topology must be refused by the spec (and by the config file
loader, with the line) before the driver is even chosen.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from certifier import topology as topo
from certifier.settings import ConfigError, load_config_file, parse_config_text
from workers.testbed.base import TestbedError, TestbedSpec
from workers.testbed.factory import create_testbed

EXAMPLES = Path(__file__).parents[2] / "examples" / "topologies"

CLOUD: dict[str, Any] = {
    "hosts": ["control", {"name": "netnode", "router": True}, "compute1", "compute2"],
    "networks": [
        {"name": "mgmt", "subnet": "198.18.10.0/24", "links": ["control", "netnode"]},
        {"name": "data", "subnet": "198.18.11.0/24", "mtu": 1500,
         "links": ["netnode", "compute1", "compute2"]},
    ],
    "overlays": [{"name": "tenant", "type": "vxlan", "id": 1001, "underlay": "data",
                  "subnet": "198.18.20.0/24", "hosts": ["compute1", "compute2"]}],
}


def _cloud(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(CLOUD)
    raw.update(changes)
    return raw


def _plan(raw: dict[str, Any]) -> topo.Plan:
    return topo.plan(topo.parse(raw))


def test_addresses_routers_from_dot_one_hosts_from_dot_eleven() -> None:
    plan = _plan(CLOUD)
    assert plan.addresses_of("netnode") == {"mgmt": "198.18.10.1", "data": "198.18.11.1"}
    assert plan.addresses_of("control") == {"mgmt": "198.18.10.11"}
    assert plan.addresses_of("compute2") == {"data": "198.18.11.12", "tenant": "198.18.20.12"}
    assert plan.routers == ("netnode",)


def test_interface_names_are_short_and_unique() -> None:
    plan = _plan(CLOUD)
    assert plan.interfaces_of("netnode") == {"mgmt": "eth0", "data": "eth1"}
    assert plan.interfaces_of("compute1") == {"data": "eth0", "tenant": "vx-tenant"}
    names = [link.peer for link in plan.links] + [n.bridge for n in plan.networks]
    assert len(names) == len(set(names)) and max(map(len, names)) <= 15


def test_hosts_get_routes_through_the_router_to_networks_they_are_not_on() -> None:
    plan = _plan(CLOUD)
    routes = {(r.host, r.subnet, r.via) for r in plan.routes}
    assert routes == {("control", "198.18.11.0/24", "198.18.10.1"),
                      ("compute1", "198.18.10.0/24", "198.18.11.1"),
                      ("compute2", "198.18.10.0/24", "198.18.11.1")}
    assert plan.routed("control", "compute1") == "198.18.11.11"
    assert plan.routed("compute1", "compute2") is None  # same network: no route needed


def test_routes_cross_two_routers() -> None:
    raw = {"hosts": ["a", {"name": "r1", "router": True}, {"name": "r2", "router": True}, "b"],
           "networks": [{"name": "n1", "subnet": "198.18.1.0/24", "links": ["a", "r1"]},
                        {"name": "n2", "subnet": "198.18.2.0/24", "links": ["r1", "r2"]},
                        {"name": "n3", "subnet": "198.18.3.0/24", "links": ["r2", "b"]}]}
    routes = {(r.host, r.subnet): r.via for r in _plan(raw).routes}
    assert routes[("a", "198.18.3.0/24")] == "198.18.1.1"  # via r1, which goes on to r2
    assert routes[("r1", "198.18.3.0/24")] == "198.18.2.2"
    assert routes[("b", "198.18.1.0/24")] == "198.18.3.1"


def test_overlay_mtu_is_the_underlay_mtu_minus_the_overhead() -> None:
    vxlan = _plan(CLOUD).overlays[0]
    assert (vxlan.kind, vxlan.mtu, vxlan.ifname) == ("vxlan", 1500 - 50, "vx-tenant")
    gre = _plan(_cloud(overlays=[{**CLOUD["overlays"][0], "type": "gre"}])).overlays[0]
    assert (gre.kind, gre.mtu, gre.ifname) == ("gre", 1500 - 42, "gt-tenant")
    small = _cloud()
    small["networks"][1]["links"] = ["netnode", "compute1", {"host": "compute2", "mtu": 1400}]
    assert _plan(small).overlays[0].mtu == 1400 - 50  # the smallest member's underlay


def test_link_properties_default_to_the_networks() -> None:
    raw = _cloud()
    raw["networks"][1].update(rate="1gbit", delay="1ms")
    raw["networks"][1]["links"] = ["netnode", "compute1",
                                   {"host": "compute2", "rate": "100mbit", "loss": 1}]
    links = {link.host: link.shaping for link in _plan(raw).links if link.network == "data"}
    assert (links["compute1"].rate, links["compute1"].delay) == ("1gbit", "1ms")
    assert (links["compute2"].rate, links["compute2"].loss, links["compute2"].delay) == (
        "100mbit", 1, "1ms")


def _refused(raw: dict[str, Any]) -> str:
    with pytest.raises(topo.TopologyError) as caught:
        topo.parse(raw)
    return str(caught.value)


def test_overlapping_subnets_are_refused() -> None:
    raw = _cloud()
    raw["networks"][1]["subnet"] = "198.18.10.128/25"
    assert "overlapping subnets" in _refused(raw)
    raw = _cloud()
    raw["overlays"][0]["subnet"] = "198.18.11.0/25"
    assert "network data (198.18.11.0/24) and overlay tenant" in _refused(raw)


def test_a_link_to_an_unknown_host_is_refused() -> None:
    raw = _cloud()
    raw["networks"][0]["links"] = ["control", "netnode", "nova9"]
    assert "network mgmt: link to unknown host 'nova9'" in _refused(raw)
    raw = _cloud()
    raw["overlays"][0]["hosts"] = ["compute1", "compute9"]
    assert "unknown host 'compute9'" in _refused(raw)


@pytest.mark.parametrize(("subnet", "why"), [
    ("10.0.0.0/24", "must lie inside 198.18.0.0/15"),
    ("198.20.0.0/24", "must lie inside 198.18.0.0/15"),
    ("198.18.0.1/24", "is not a network"),
    ("fd00::/64", "must lie inside"),
])
def test_a_subnet_outside_the_benchmarking_range_is_refused(subnet: str, why: str) -> None:
    raw = _cloud()
    raw["networks"][0]["subnet"] = subnet
    assert why in _refused(raw)


def test_an_address_outside_the_range_or_its_subnet_is_refused() -> None:
    raw = _cloud()
    raw["networks"][0]["links"] = [{"host": "control", "address": "10.1.2.3"}, "netnode"]
    assert "10.1.2.3 is outside its subnet 198.18.10.0/24 and outside 198.18.0.0/15" in \
        _refused(raw)
    raw["networks"][0]["links"] = [{"host": "control", "address": "198.18.11.5"}, "netnode"]
    assert "198.18.11.5 is outside its subnet" in _refused(raw)
    raw["networks"][0]["links"] = [{"host": "control", "address": "198.18.10.255"}, "netnode"]
    assert "broadcast" in _refused(raw)


def test_the_same_address_twice_is_refused() -> None:
    raw = _cloud()
    raw["networks"][0]["links"] = [{"host": "control", "address": "198.18.10.1"}, "netnode",
                                   {"host": "compute1", "address": "198.18.10.1"}]
    assert "address 198.18.10.1 is given to both control and compute1" in _refused(raw)


def test_an_underlay_mtu_that_leaves_no_room_for_the_overlay_is_refused() -> None:
    raw = _cloud()
    raw["networks"][1]["mtu"] = 600
    assert ("underlay MTU 600 minus the 50-byte VXLAN overhead leaves 550, below the "
            "minimum 576") in _refused(raw)
    raw = _cloud()
    raw["overlays"][0]["mtu"] = 1451
    assert "mtu 1451 does not fit: underlay MTU 1500 minus the 50-byte VXLAN overhead is 1450" \
        in _refused(raw)


@pytest.mark.parametrize(("change", "why"), [
    ({"hosts": ["sw", "netnode"]}, "reserved"),
    ({"hosts": ["Control"]}, "host name 'Control' must be 1-8 lower-case"),
    ({"hosts": ["control", "control"]}, "must be unique"),
    ({"networks": []}, "at least one network"),
])
def test_malformed_topologies_are_refused(change: dict[str, Any], why: str) -> None:
    assert why in _refused(_cloud(**change))


def test_a_host_on_no_network_is_refused() -> None:
    raw = _cloud()
    raw["networks"][1]["links"] = ["netnode", "compute2"]
    raw["overlays"] = []
    assert "host compute1 is linked to no network" in _refused(raw)


def test_gre_joins_exactly_two_hosts_and_routers_join_two_networks() -> None:
    raw = _cloud(overlays=[{**CLOUD["overlays"][0], "type": "gre",
                            "hosts": ["compute1", "compute2", "netnode"]}])
    assert "GRE is point to point: exactly two hosts, not 3" in _refused(raw)
    raw = _cloud()
    raw["networks"][0]["links"] = ["control", "compute1"]
    assert "router netnode must be linked to at least two networks" in _refused(raw)


def test_an_overlay_member_must_be_on_the_underlay() -> None:
    raw = _cloud()
    raw["overlays"][0]["hosts"] = ["compute1", "control"]
    assert "host control is not linked to the underlay network data" in _refused(raw)


@pytest.mark.parametrize("bad", [{"rate": "fast"}, {"delay": "5"}, {"loss": 101}, {"mtu": 100}])
def test_bad_link_properties_are_refused(bad: dict[str, Any]) -> None:
    raw = _cloud()
    raw["networks"][1]["links"] = ["netnode", "compute1", {"host": "compute2", **bad}]
    _refused(raw)


def test_an_invalid_topology_never_reaches_the_driver(tmp_path: Path) -> None:
    raw = _cloud()
    raw["networks"][0]["links"] = ["control", "netnode", "ghost"]
    with pytest.raises(TestbedError, match="unknown host 'ghost'"):
        TestbedSpec(name="t", topology=topo.TopologyConfig.model_validate(raw))
    assert not list(tmp_path.iterdir())


def test_a_valid_topology_gives_the_spec_its_hosts_and_first_subnet() -> None:
    spec = TestbedSpec(name="t", topology=topo.parse(CLOUD))
    assert spec.hosts == ("control", "netnode", "compute1", "compute2")
    assert spec.subnet == "198.18.10.0/24"
    assert spec.addresses()["compute1"] == "198.18.11.11"


def test_the_simple_form_is_one_network_called_lan() -> None:
    spec = TestbedSpec(name="t", hosts=("h1", "h2"), subnet="198.18.5.0/24", mtu=1400)
    assert spec.plan is not None
    assert [(n.name, n.subnet, n.mtu, n.bridge) for n in spec.plan.networks] == [
        ("lan", "198.18.5.0/24", 1400, "br-lan")]
    assert spec.addresses() == {"h1": "198.18.5.11", "h2": "198.18.5.12"}


@pytest.mark.parametrize("name", ["small-cloud.yaml", "simple-l2.yaml"])
def test_the_example_topologies_are_valid(name: str) -> None:
    loaded = topo.load(EXAMPLES / name)
    assert topo.plan(loaded).hosts


def test_a_config_file_names_the_line_of_a_bad_inline_topology() -> None:
    text = ("testbeds:\n"
            "  - name: cloud\n"
            "    topology:\n"
            "      hosts: [a, b]\n"
            "      networks:\n"
            "        - {name: lan, subnet: 198.18.0.0/24, links: [a, b, c]}\n")
    with pytest.raises(ConfigError, match=r"testbeds\.0 \(line 2\): topology: network lan: "
                                          r"link to unknown host 'c'"):
        parse_config_text(text)


def test_hosts_and_a_topology_cannot_be_mixed() -> None:
    text = ("testbeds:\n  - name: cloud\n    hosts: [a]\n    topology_file: t.yaml\n")
    with pytest.raises(ConfigError, match="cannot be combined with a topology"):
        parse_config_text(text)


def test_a_topology_file_is_read_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "topologies").mkdir()
    (tmp_path / "topologies" / "cloud.yaml").write_text(
        (EXAMPLES / "small-cloud.yaml").read_text())
    config = tmp_path / "certifier.yaml"
    config.write_text("testbeds:\n  - name: cloud\n    topology_file: topologies/cloud.yaml\n"
                      "  - name: other\n    subnet: 198.19.0.0/24\n")
    loaded = load_config_file(config)
    bed = loaded.testbeds[0]
    assert bed.topology is not None and bed.host_names() == (
        "control", "netnode", "compute1", "compute2")


def test_a_bad_topology_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "hosts: [a]\nnetworks:\n  - {name: lan, subnet: 10.0.0.0/24, links: [a]}\n")
    config = tmp_path / "certifier.yaml"
    config.write_text("testbeds:\n  - name: cloud\n    topology_file: bad.yaml\n")
    with pytest.raises(ConfigError, match=r"topology_file: .*bad\.yaml: networks\[0\] lan: "
                                          r"subnet 10\.0\.0\.0/24 must lie inside"):
        load_config_file(config)


def test_testbeds_whose_topologies_overlap_are_refused(tmp_path: Path) -> None:
    (tmp_path / "cloud.yaml").write_text((EXAMPLES / "small-cloud.yaml").read_text())
    config = tmp_path / "certifier.yaml"
    config.write_text("testbeds:\n  - name: cloud\n    topology_file: cloud.yaml\n"
                      "  - name: other\n    subnet: 198.18.20.0/24\n")
    with pytest.raises(ConfigError, match="overlapping subnets"):
        load_config_file(config)


def test_an_invalid_topology_leaves_nothing_behind(tmp_path: Path) -> None:
    raw = _cloud()
    raw["networks"][1]["mtu"] = 580
    with pytest.raises(TestbedError, match="overhead"):
        create_testbed(TestbedSpec(name="t", topology=topo.TopologyConfig.model_validate(raw)),
                       tag="bad1", state_dir=tmp_path / "s", records_dir=tmp_path / "r")
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()
