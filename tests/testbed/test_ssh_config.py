"""The ssh testbed's configuration and the commands it builds: no root, no sshd needed."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from certifier.settings import ConfigError, SshConfig, SshHostConfig, load_config_file
from workers.testbed.base import TestbedSpec
from workers.testbed.ssh import remote_command, ssh_argv

LAB = """\
testbeds:
  - name: lab
    driver: ssh
    role: soak
    ssh:
      user: certifier
      key: keys/lab_ed25519
      known_hosts: keys/known_hosts
      remote_dir: /var/tmp
      hosts:
        - {name: node1, address: 10.20.0.11}
        - {name: node2, address: 10.20.0.12, connect: node2.lab.example, port: 2222,
           iface: ens3}
"""


def test_an_ssh_testbed_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "certifier.yaml").write_text(LAB)
    bed = load_config_file(tmp_path / "certifier.yaml").testbeds[0]
    assert bed.ssh is not None
    assert bed.host_names() == ("node1", "node2")
    assert bed.ssh.key == tmp_path / "keys" / "lab_ed25519"  # relative to the config file
    assert bed.ssh.known_hosts == tmp_path / "keys" / "known_hosts"
    assert bed.subnets() == []  # the lab's addresses are not ours to check for overlap
    spec = TestbedSpec(name=bed.name, driver="ssh", ssh=bed.ssh)
    assert spec.hosts == ("node1", "node2")
    assert spec.addresses() == {"node1": "10.20.0.11", "node2": "10.20.0.12"}


@pytest.mark.parametrize(("text", "why"), [
    ("testbeds:\n  - {name: lab, driver: ssh}\n", "driver ssh needs an ssh section"),
    ("testbeds:\n  - name: lab\n    ssh: {key: k, hosts: [{name: a, address: 10.0.0.1}]}\n",
     "driver ssh needs an ssh section"),
    ("testbeds:\n  - name: lab\n    driver: ssh\n    hosts: [a]\n"
     "    ssh: {key: k, hosts: [{name: a, address: 10.0.0.1}]}\n",
     "lists its hosts under ssh.hosts"),
    ("testbeds:\n  - name: lab\n    driver: ssh\n"
     "    ssh: {key: k, hosts: [{name: a, address: not-an-ip}]}\n", "not an IP address"),
    ("testbeds:\n  - name: lab\n    driver: ssh\n"
     "    ssh: {key: k, hosts: [{name: a, address: 10.0.0.1, connect: -oProxyCommand=x}]}\n",
     "must not be empty, start with '-'"),
    ("testbeds:\n  - name: lab\n    driver: ssh\n"
     "    ssh: {key: k, remote_dir: 'tmp', hosts: [{name: a, address: 10.0.0.1}]}\n",
     "remote_dir"),
])
def test_bad_ssh_sections_are_refused(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "certifier.yaml").write_text(text)
    with pytest.raises(ConfigError, match=why):
        load_config_file(tmp_path / "certifier.yaml")


def test_the_ssh_command_is_batch_mode_with_the_key_and_checked_host_keys() -> None:
    config = SshConfig(key=Path("/k/id"), known_hosts=Path("/k/known"),
                       hosts=(SshHostConfig(name="a", address="10.0.0.1"),))
    argv = ssh_argv(config, config.hosts[0], Path("/tmp/cf-ssh-t1/a"))
    text = " ".join(argv)
    for option in ("-F /dev/null", "BatchMode=yes", "-i /k/id", "StrictHostKeyChecking=yes",
                   "UserKnownHostsFile=/k/known", "ControlPath=/tmp/cf-ssh-t1/a"):
        assert option in text
    assert argv[-3:] == ["-l", "root", "10.0.0.1"]


def test_remote_commands_quote_every_word_and_keep_local_paths_home() -> None:
    line = remote_command(["sh", "-c", "echo $X; rm -rf /", "x y"],
                          {"X": "it's", "PATH": "/local/bin", "HOME": "/root",
                           "CERTIFIER_SSH_CLIENT": "1"}, "/var/tmp/cf-t1")
    assert line.startswith("cd /var/tmp/cf-t1 && exec env X=")
    assert "PATH" not in line and "HOME" not in line and "SSH_CLIENT" not in line
    words = shlex.split(line.split("&& ", 1)[1])
    assert words == ["exec", "env", "X=it's", "sh", "-c", "echo $X; rm -rf /", "x y"]
    with pytest.raises(ValueError, match="not an environment variable name"):
        remote_command(["true"], {"A;B": "1"})
