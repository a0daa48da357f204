"""The ssh driver for real: OpenSSH's sshd runs inside the hosts of a netns testbed (the "lab"),
and a second testbed reaches them only over SSH — commands, environment, the suites, teardown,
and the janitor after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certifier import topology as topo
from certifier.settings import SshConfig, SshHostConfig
from tests.requirements import needs_binary, needs_root
from workers.suites import bandwidth, ping, storage
from workers.testbed import reaper, records
from workers.testbed.base import InfraError, Testbed, TestbedSpec
from workers.testbed.factory import create_testbed
from workers.testbed.process import pids_with_cookie
from workers.testbed.ssh import control_dir

from .conftest import RECORDS_DIR, loops_of, unique_subnet, unique_tag

# Records of their own: a stale ssh record (its lab gone) costs every janitor pass a connect
# timeout, which the netns janitor tests need not pay.
SSH_RECORDS = RECORDS_DIR / "ssh"

pytestmark = [pytest.mark.root, needs_root,
              needs_binary("ip", "ssh", "ssh-keygen", "/usr/sbin/sshd", "unshare", "ping")]

SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {host_key}
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
MaxSessions 64
MaxStartups 64:30:128
LogLevel ERROR
"""


@dataclass
class Lab:
    """Namespaces running sshd, and the ssh section that reaches them."""

    bed: Testbed
    config: SshConfig
    folder: Path


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("lab")
    SSH_RECORDS.mkdir(parents=True, exist_ok=True)
    cloud = topo.parse({"hosts": ["h1", "h2"], "controller": {"network": "lan"},
                        "networks": [{"name": "lan", "subnet": unique_subnet(),
                                      "links": ["h1", "h2"]}]})
    bed = create_testbed(TestbedSpec(name="lab", topology=cloud), tag=unique_tag(),
                         state_dir=tmp / "lab", records_dir=RECORDS_DIR)
    try:
        _keygen(tmp / "client")
        _keygen(tmp / "hostkey")
        (tmp / "authorized_keys").write_text((tmp / "client.pub").read_text())
        host_key = (tmp / "hostkey.pub").read_text().split()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        known = []
        empty_rc = tmp / "empty-bashrc"
        empty_rc.write_text("")
        for h in bed.hosts:
            sshd_config = tmp / f"sshd-{h.name}.conf"
            sshd_config.write_text(SSHD_CONFIG.format(address=h.address, host_key=tmp / "hostkey",
                                                 authorized=tmp / "authorized_keys"))
            # Sessions run root's login shell; hide its ~/.bashrc (pyenv and the like) in a
            # mount namespace of sshd's own, so a "clean lab host" answers in milliseconds.
            bed.spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       'mount --bind "$1" "$HOME/.bashrc" 2>/dev/null; '
                       'exec /usr/sbin/sshd -D -e -f "$2"', "sh", str(empty_rc), str(sshd_config)],
                      host=h.name, log_path=tmp / f"sshd-{h.name}.log")
            known.append(f"{h.address} {host_key[0]} {host_key[1]}\n")
        (tmp / "known_hosts").write_text("".join(known))
        deadline = time.monotonic() + 10
        while not all(bed.listening(h.name, 22) for h in bed.hosts):
            assert time.monotonic() < deadline, "sshd did not start listening"
            time.sleep(0.05)
        config = SshConfig(key=tmp / "client", known_hosts=tmp / "known_hosts",
                           remote_dir=str(tmp / "remote"),
                           hosts=tuple(SshHostConfig(name=h.name, address=h.address)
                                       for h in bed.hosts))
        yield Lab(bed, config, tmp)
    finally:
        bed.teardown()


@pytest.fixture
def ssh_bed(lab: Lab, tmp_path: Path) -> Iterator[Testbed]:
    bed = create_testbed(TestbedSpec(name="remote", driver="ssh", ssh=lab.config),
                         tag=unique_tag(), state_dir=tmp_path / "state", records_dir=SSH_RECORDS)
    yield bed
    bed.teardown()


def test_commands_run_on_the_remote_host_with_environment_and_folder(ssh_bed: Testbed,
                                                                     lab: Lab) -> None:
    h2 = lab.bed.host("h2")
    folder = Path(lab.config.remote_dir) / f"cf-{ssh_bed.tag}"
    done = ssh_bed.run(["sh", "-c", 'echo "$GREETING"; pwd; ip -o -4 addr show eth0',
                        "ignored"], host="h2", env={"GREETING": "it's a \"quoted\" $HOME"},
                       cwd=folder, timeout=30)
    assert done.ok, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == "it's a \"quoted\" $HOME"
    assert lines[1] == str(folder)
    assert h2.address in lines[2]  # it ran inside h2's namespace, through h2's sshd
    assert done.argv[0] == "sh"
    harmless = ssh_bed.run(["echo", "$(touch /tmp/cf-pwned)", ";", "rm", "-rf", "/"],
                           host="h1", timeout=30)
    assert harmless.stdout.strip() == "$(touch /tmp/cf-pwned) ; rm -rf /"
    assert not Path("/tmp/cf-pwned").exists()


def test_hooks_learn_each_hosts_address_and_interface(ssh_bed: Testbed, lab: Lab) -> None:
    env = ssh_bed.hook_env()
    assert env["CERTIFIER_TESTBED_DRIVER"] == "ssh"
    assert env["CERTIFIER_HOST_H1_ADDR"] == lab.bed.host("h1").address
    assert env["CERTIFIER_HOST_H1_IFACE"] == "eth0" and env["CERTIFIER_HOST_H1_NS"] == ""


def test_a_missing_remote_tool_is_an_infra_error(ssh_bed: Testbed) -> None:
    with pytest.raises(InfraError, match="no-such-tool is not installed or not on PATH on h1"):
        ssh_bed.run(["no-such-tool", "--version"], host="h1", timeout=30)


@needs_binary("iperf3", "fio", "ss")
def test_the_suites_run_over_ssh(ssh_bed: Testbed) -> None:
    pinged = ping.run(ssh_bed, ping.PingOptions(count=5, interval=0.02))
    assert pinged.infra_error is None, pinged.log
    assert [c.name for c in pinged.checks] == ["reach h1->h2", "reach h2->h1"]
    assert all(c.passed for c in pinged.checks)

    measured = bandwidth.run(ssh_bed, bandwidth.BandwidthOptions(duration_s=1))
    assert measured.infra_error is None, measured.log
    rates = {(m.labels["src"], m.labels["dst"], m.labels["streams"]): m.value
             for m in measured.measurements if m.metric == "throughput_gbps"}
    assert set(rates) == {("h1", "h2", "1"), ("h2", "h1", "1"), ("h1", "h2", "4")}
    assert min(rates.values()) > 0.5
    assert any(m.metric == "udp_jitter_ms" for m in measured.measurements)

    stored = storage.run(ssh_bed, storage.StorageOptions(size="16M", runtime_s=1))
    assert stored.infra_error is None, stored.log
    assert {m.labels["fs"] for m in stored.measurements} == {"ext4-loop"}
    assert {m.labels["io"] for m in stored.measurements} == {"direct"}
    assert "cf-scratch" in stored.log and "on h1" in stored.log


def test_teardown_kills_remote_processes_and_removes_the_remote_folder(
        lab: Lab, tmp_path: Path) -> None:
    bed = create_testbed(TestbedSpec(name="remote", driver="ssh", ssh=lab.config),
                         tag=unique_tag(), state_dir=tmp_path / "state", records_dir=SSH_RECORDS)
    folder = Path(lab.config.remote_dir) / f"cf-{bed.tag}"
    bed.spawn(["sleep", "300"], host="h2", log_path=tmp_path / "sleep.log")
    made = bed.scratch(8 << 20, "h1")
    deadline = time.monotonic() + 5
    while len(pids_with_cookie(bed.cookie)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # two ssh masters, the client, the remote sleep
    assert folder.is_dir() and _remote_mounted(bed, "h1", str(made.path))
    assert loops_of(Path(made.path).with_suffix(".img"))
    bed.teardown()
    assert pids_with_cookie(bed.cookie) == []
    assert not folder.exists() and not loops_of(Path(made.path).with_suffix(".img"))
    assert not records.path_for(SSH_RECORDS, bed.tag).exists()


def test_stop_kills_the_remote_process_too(ssh_bed: Testbed, tmp_path: Path) -> None:
    proc = ssh_bed.spawn(["sleep", "300"], host="h1", log_path=tmp_path / "s.log")
    deadline = time.monotonic() + 5
    while not _remote_sleeps(ssh_bed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _remote_sleeps(ssh_bed)
    ssh_bed.stop(proc)
    assert proc.poll() is not None and _remote_sleeps(ssh_bed) == []


def _remote_mounted(bed: Testbed, host: str, path: str) -> bool:
    """Mounts made over ssh live in sshd's mount namespace: look from there."""
    mounts = bed.run(["cat", "/proc/self/mounts"], host=host, timeout=30).stdout
    return any(line.split()[1] == path for line in mounts.splitlines())


def _remote_sleeps(bed: Testbed) -> list[int]:
    return [pid for pid in pids_with_cookie(bed.cookie)
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"]


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from certifier.settings import SshConfig
    from workers.testbed.base import TestbedSpec
    from workers.testbed.factory import create_testbed

    tag, config, state, records_dir = sys.argv[1:5]
    bed = create_testbed(TestbedSpec(name="child", driver="ssh",
                                     ssh=SshConfig.model_validate_json(config)),
                         tag=tag, state_dir=Path(state), records_dir=Path(records_dir))
    made = bed.scratch(8 << 20, "h2")
    bed.spawn(["sleep", "300"], host="h1", log_path=Path(state) / "sleep.log")
    time.sleep(0.5)
    print(bed.cookie, made.path, flush=True)
    time.sleep(300)
""")


def test_janitor_cleans_the_remote_hosts_of_a_sigkilled_owner(lab: Lab,
                                                              tmp_path: Path) -> None:
    tag = unique_tag()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, tag, lab.config.model_dump_json(), str(tmp_path / "s"),
         str(SSH_RECORDS)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert child.stdout is not None
    cookie, mount = child.stdout.readline().split()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=5)
    folder = Path(lab.config.remote_dir) / f"cf-{tag}"
    image = Path(mount).with_suffix(".img")
    assert pids_with_cookie(cookie) and folder.is_dir() and loops_of(image)
    record = records.read(records.path_for(SSH_RECORDS, tag))
    assert record is not None and [r.host for r in record.remote] == ["h1", "h2"]

    removed = reaper.reap(SSH_RECORDS, orphan_tags={tag})

    assert f"remote h1:{folder}" in removed and f"record {tag}" in removed
    assert pids_with_cookie(cookie) == []
    assert not folder.exists() and loops_of(image) == []
    assert not control_dir(tag).exists()


def test_an_unreachable_host_fails_the_build_and_leaves_nothing(lab: Lab,
                                                                 tmp_path: Path) -> None:
    tag = unique_tag()
    hosts = (*lab.config.hosts, SshHostConfig(name="h3", address=lab.bed.host("h2").address,
                                              port=2222))
    config = lab.config.model_copy(update={"hosts": hosts, "connect_timeout_s": 2})
    with pytest.raises(InfraError, match="cannot reach h3 over ssh"):
        create_testbed(TestbedSpec(name="r", driver="ssh", ssh=config), tag=tag,
                       state_dir=tmp_path, records_dir=SSH_RECORDS)
    assert not records.path_for(SSH_RECORDS, tag).exists()
    assert not (Path(lab.config.remote_dir) / f"cf-{tag}").exists()
    assert not control_dir(tag).exists()


def test_a_host_with_an_unknown_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("")
    config = lab.config.model_copy(update={"known_hosts": tmp_path / "known_hosts"})
    with pytest.raises(InfraError, match="Host key verification failed"):
        create_testbed(TestbedSpec(name="r", driver="ssh", ssh=config), tag=unique_tag(),
                       state_dir=tmp_path / "s", records_dir=SSH_RECORDS)


def test_the_record_holds_what_the_janitor_needs_and_no_secret(ssh_bed: Testbed,
                                                               lab: Lab) -> None:
    record = json.loads(records.path_for(SSH_RECORDS, ssh_bed.tag).read_text())
    first = record["remote"][0]
    assert first["ssh"][0] == "ssh" and "BatchMode=yes" in first["ssh"]
    assert first["folder"] == str(Path(lab.config.remote_dir) / f"cf-{ssh_bed.tag}")
    assert "PRIVATE KEY" not in json.dumps(record)
