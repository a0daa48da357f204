"""A bad testbed request is refused with a clear TestbedError before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.testbed.base import TestbedError, TestbedSpec
from workers.testbed.factory import create_testbed


def test_default_spec_gives_hosts_addresses_from_dot_eleven() -> None:
    spec = TestbedSpec(name="gate")
    assert spec.addresses() == {"h1": "198.18.0.11", "h2": "198.18.0.12"}


def test_hosts_given_as_a_list_become_a_tuple() -> None:
    spec = TestbedSpec(name="gate", hosts=["a", "b", "c"])  # type: ignore[arg-type]
    assert spec.hosts == ("a", "b", "c")


def test_testbed_error_is_a_value_error() -> None:
    assert issubclass(TestbedError, ValueError)


@pytest.mark.parametrize("subnet", [
    "10.0.0.0/24",          # a real private network
    "198.20.0.0/24",        # just outside the benchmarking range
    "198.16.0.0/12",        # contains the range but is larger
    "198.18.0.1/24",        # host bits set
    "fd00::/64",            # IPv6
    "not-a-network",
])
def test_subnet_outside_the_benchmarking_range_is_refused(subnet: str) -> None:
    with pytest.raises(TestbedError, match="subnet"):
        TestbedSpec(name="gate", subnet=subnet)


@pytest.mark.parametrize("subnet", ["198.18.0.0/15", "198.19.255.0/24", "198.18.7.0/28"])
def test_subnets_inside_the_range_are_accepted(subnet: str) -> None:
    assert TestbedSpec(name="gate", subnet=subnet).subnet == subnet


@pytest.mark.parametrize("host", ["H1", "1h", "h-1", "h_1", "host12345", "", "h 1"])
def test_bad_host_names_are_refused(host: str) -> None:
    with pytest.raises(TestbedError, match="host names"):
        TestbedSpec(name="gate", hosts=("h1", host))


def test_the_switch_name_is_reserved() -> None:
    with pytest.raises(TestbedError, match="reserved"):
        TestbedSpec(name="gate", hosts=("h1", "sw"))


def test_duplicate_host_names_are_refused() -> None:
    with pytest.raises(TestbedError, match="unique"):
        TestbedSpec(name="gate", hosts=("h1", "h2", "h1"))


def test_no_hosts_is_refused() -> None:
    with pytest.raises(TestbedError, match="at least one host"):
        TestbedSpec(name="gate", hosts=())


def test_a_subnet_too_small_for_the_hosts_is_refused() -> None:
    # A /28 holds .11 to .14 (.15 is the broadcast address): four hosts, not five.
    TestbedSpec(name="gate", hosts=("a", "b", "c", "d"), subnet="198.18.0.0/28")
    with pytest.raises(TestbedError, match="room for 4 hosts"):
        TestbedSpec(name="gate", hosts=("a", "b", "c", "d", "e"), subnet="198.18.0.0/28")


@pytest.mark.parametrize("mtu", [0, 575, 65536])
def test_mtu_out_of_range_is_refused(mtu: int) -> None:
    with pytest.raises(TestbedError, match="mtu"):
        TestbedSpec(name="gate", mtu=mtu)


def test_unknown_driver_is_refused() -> None:
    with pytest.raises(TestbedError, match="unknown testbed driver 'vmware'"):
        TestbedSpec(name="gate", driver="vmware")  # type: ignore[arg-type]


def test_the_ssh_driver_needs_its_section() -> None:
    with pytest.raises(TestbedError, match="ssh driver needs an ssh section"):
        TestbedSpec(name="gate", driver="ssh")


@pytest.mark.parametrize("tag", ["", "Upper", "has-dash", "a" * 13, "t/x"])
def test_bad_tag_is_refused_before_anything_is_written(tag: str, tmp_path: Path) -> None:
    records = tmp_path / "records"
    with pytest.raises(TestbedError, match="tag"):
        create_testbed(TestbedSpec(name="gate", driver="local"), tag=tag,
                       state_dir=tmp_path / "state", records_dir=records)
    assert not records.exists()
    assert not (tmp_path / "state").exists()


def test_netns_without_root_says_to_use_local(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.testbed.factory.os.geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match="'local' driver"):
        create_testbed(TestbedSpec(name="gate"), tag="t1", state_dir=tmp_path / "s",
                       records_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
