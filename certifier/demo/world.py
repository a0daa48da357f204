"""Build the demo world: real git repositories as upstream components, their recipes and a config.

Four upstream components, each with a real mechanism a bad commit can break for real:

- ``netpolicy``: ``netpolicy.conf`` sets the egress rate its recipe applies with ``tc`` inside
  every host's namespace; a commit that lowers it halves the measured bandwidth (as a neutron QoS
  patch once did).
- ``routing``: ``routes.conf`` lists static routes its recipe installs in the hosts' namespaces;
  a commit that sends a host's address to an ``unreachable`` route cuts that host off.
- ``storage``: ``storage.conf`` picks the cache mode of the testbed's data volume (its state
  folder, where the storage suite writes); ``writethrough`` makes every write synchronous
  (``chattr +S``), which slows writes several times.
- ``api``: ``kvd.py``, a small key-value service that keeps its data on disk, and
  ``migrate.py``, the data migration its recipe runs on every deploy and upgrade. The recipe has
  the whole contract (``deploy``, ``upgrade``, ``resources create|verify|destroy``): the upgrade
  suite stores keys and configuration in the running service, upgrades it in place and checks
  they are still there. A commit whose migration "starts from a clean layout" drops the data.
  Its ``snapshot`` hook prints what kvd runs with (version, every setting, data layout), so
  Certifier diffs it across the upgrade: kvd 2, whose new defaults override the operator's
  ``max_clients = 512`` in ``local.conf`` (the data and the file itself untouched), is caught
  though ``resources verify`` checks only the data and the quota settings.

:data:`BAD_COMMITS` and :data:`FIX_COMMITS` are what the scenario pushes; the recipes are the
operator's and never change.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GOOD_RATE_MBIT = 800
BAD_RATE_MBIT = 400

NETPOLICY_DEPLOY = """#!/bin/sh
# Apply the component's egress policy on every host of the testbed (runs on the controller).
# No `upgrade` hook: the upgrade suite runs this again with the new checkout (tc replace).
set -eu
conf="$CERTIFIER_CHECKOUT/netpolicy.conf"
rate=$(sed -n 's/^egress_rate_mbit *= *\\([0-9][0-9]*\\)$/\\1/p' "$conf")
[ -n "$rate" ] || { echo "netpolicy.conf has no egress_rate_mbit" >&2; exit 1; }
if [ "$CERTIFIER_TESTBED_DRIVER" != netns ]; then
    echo "driver $CERTIFIER_TESTBED_DRIVER: no namespaces, egress policy not applied"
    exit 0
fi
burst=$((rate * 1000000 / 8 / 100))
[ "$burst" -ge 65536 ] || burst=65536
for host in $CERTIFIER_HOSTS; do
    key=CERTIFIER_HOST_$(echo "$host" | tr a-z A-Z)
    ns=$(printenv "${key}_NS")
    iface=$(printenv "${key}_IFACE")
    ip netns exec "$ns" tc qdisc replace dev "$iface" root tbf rate "${rate}mbit" \\
        burst "$burst" latency 50ms
    echo "$host: egress on $iface limited to ${rate} Mbit/s"
done
"""

ROUTING_DEPLOY = """#!/bin/sh
# Install the static routes of routes.conf in the hosts' namespaces. Each line reads
# "<host> <type> <destination>": a route type (unreachable, blackhole, prohibit) and a prefix or
# another host's name (its address). `ip route replace` makes it safe to run again as the upgrade.
set -eu
conf="$CERTIFIER_CHECKOUT/routes.conf"
if [ "$CERTIFIER_TESTBED_DRIVER" != netns ]; then
    echo "driver $CERTIFIER_TESTBED_DRIVER: no namespaces, routes not installed"
    exit 0
fi
grep -v '^[[:space:]]*\\(#\\|$\\)' "$conf" | while read -r host type dest rest; do
    ns=$(printenv "CERTIFIER_HOST_$(echo "$host" | tr a-z A-Z)_NS") \\
        || { echo "routes.conf: no host $host on this testbed" >&2; exit 1; }
    case $dest in
        */*) prefix=$dest ;;
        *) addr=$(printenv "CERTIFIER_HOST_$(echo "$dest" | tr a-z A-Z)_ADDR") \\
               || { echo "routes.conf: no host $dest on this testbed" >&2; exit 1; }
           prefix=$addr/32 ;;
    esac
    ip -n "$ns" route replace "$type" "$prefix"
    echo "$host: $type route to $prefix"
done
"""

STORAGE_DEPLOY = """#!/bin/sh
# Configure the testbed's data volume (its state folder, where the storage suite writes) as
# storage.conf says. cache = writeback: the kernel's usual write-back caching; cache =
# writethrough: every write is synchronous (chattr +S, inherited by the files made under it).
set -eu
conf="$CERTIFIER_CHECKOUT/storage.conf"
mkdir -p "$CERTIFIER_COMPONENT_STATE_DIR"
cp "$conf" "$CERTIFIER_COMPONENT_STATE_DIR/storage.conf"
cache=$(sed -n 's/^cache *= *\\([a-z]*\\)$/\\1/p' "$conf")
case $cache in
    writeback|"")
        echo "data volume $CERTIFIER_STATE_DIR: write-back caching" ;;
    writethrough)
        if chattr +S "$CERTIFIER_STATE_DIR" 2>/dev/null; then
            echo "data volume $CERTIFIER_STATE_DIR: write-through (synchronous writes)"
        else
            echo "write-through asked for, but this filesystem cannot make writes synchronous"
        fi ;;
    *)
        echo "storage.conf: unknown cache mode '$cache'" >&2; exit 1 ;;
esac
"""

API_DEPLOY = """#!/bin/sh
# Install kvd (the API service) and its configuration, prepare its data, start it on the first
# host. The component's state folder keeps all of it until the upgrade.
set -eu
state=$CERTIFIER_COMPONENT_STATE_DIR
mkdir -p "$state/etc" "$state/data" "$state/bin"
cp "$CERTIFIER_CHECKOUT/kvd.py" "$state/bin/kvd.py"
cp "$CERTIFIER_CHECKOUT/api.conf" "$state/etc/api.conf"
python3 "$CERTIFIER_CHECKOUT/migrate.py" "$state/data"
exec "$CERTIFIER_RECIPE_DIR/kvctl" start
"""

API_UPGRADE = """#!/bin/sh
# Upgrade kvd in place from $CERTIFIER_FROM_COMMIT: stop it, install the new code and packaged
# configuration (the operator's local.conf stays), migrate the data, start it again.
set -eu
state=$CERTIFIER_COMPONENT_STATE_DIR
"$CERTIFIER_RECIPE_DIR/kvctl" stop
cp "$CERTIFIER_CHECKOUT/kvd.py" "$state/bin/kvd.py"
cp "$CERTIFIER_CHECKOUT/api.conf" "$state/etc/api.conf"
python3 "$CERTIFIER_CHECKOUT/migrate.py" "$state/data"
exec "$CERTIFIER_RECIPE_DIR/kvctl" start
"""

KVCTL = r'''#!/usr/bin/env python3
"""kvctl: start, stop and talk to kvd for the api recipe's hooks.

The service listens on the first host's address. Everything that talks to it runs on the second
host (inside its namespace: this script re-executes itself there once per hook), so every request
crosses the testbed's data plane.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("CERTIFIER_COMPONENT_STATE_DIR", "."))
HOSTS = os.environ.get("CERTIFIER_HOSTS", "h1").split()
KEYS = 50
LOCAL_CONF = {"quota_instances": "20", "default_flavor": "m1.small"}  # verify checks these
TUNING = {"max_clients": "512"}  # the operator's tuning: in local.conf too, not verified
INSIDE = "KVCTL_CLIENT_SIDE"


def host_env(host, what):
    return os.environ.get(f"CERTIFIER_HOST_{host.upper()}_{what}", "")


def in_host(host, argv):
    ns = host_env(host, "NS")
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def on_client_side(argv):
    """Re-execute this command on the client host (once), unless already there."""
    if os.environ.get(INSIDE):
        return
    os.environ[INSIDE] = "1"
    client = HOSTS[1] if len(HOSTS) > 1 else HOSTS[0]
    command = in_host(client, [sys.executable, __file__, *argv])
    os.execvp(command[0], command)


def port():
    for line in (STATE / "etc" / "api.conf").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "port":
            return int(value.strip())
    return 8774


def server():
    return host_env(HOSTS[0], "ADDR") or "127.0.0.1", port()


def call(*commands, timeout=5):
    """Send commands to kvd; its answers, one per command."""
    with socket.create_connection(server(), timeout=timeout) as sock:
        stream = sock.makefile("rw")
        answers = []
        for command in commands:
            stream.write(command + "\n")
            stream.flush()
            answers.append(stream.readline().rstrip("\n"))
        return answers


def pid():
    try:
        return int((STATE / "kvd.pid").read_text())
    except (OSError, ValueError):
        return None


def start():
    addr, prt = server()
    argv = [sys.executable, str(STATE / "bin" / "kvd.py"), "--data", str(STATE / "data"),
            "--config", str(STATE / "etc" / "api.conf"), "--config",
            str(STATE / "etc" / "local.conf"), "--listen", addr, "--port", str(prt),
            "--pidfile", str(STATE / "kvd.pid")]
    (STATE / "kvd.pid").unlink(missing_ok=True)
    with (STATE / "kvd.log").open("ab") as log:
        subprocess.Popen(in_host(HOSTS[0], argv), stdin=subprocess.DEVNULL, stdout=log,
                         stderr=log, start_new_session=True)
    on_client_side(["wait"])


def wait():
    addr, prt = server()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            print(f"kvd started on {HOSTS[0]} {addr}:{prt}: {call('PING', timeout=1)[0]}")
            return 0
        except (OSError, IndexError):
            time.sleep(0.05)
    print(f"kvd did not answer on {addr}:{prt} within 10 s", file=sys.stderr)
    print((STATE / "kvd.log").read_text()[-2000:], file=sys.stderr)
    return 1


def gone(running):
    try:
        stat = Path(f"/proc/{running}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def stop():
    running = pid()
    if running is None or gone(running):
        return 0
    os.kill(running, signal.SIGTERM)
    for _ in range(100):
        if gone(running):
            print(f"kvd (pid {running}) stopped")
            return 0
        time.sleep(0.02)
    os.kill(running, signal.SIGKILL)
    print(f"kvd (pid {running}) killed")
    return 0


def snapshot():
    keys = call("KEYS")[0].split()[1:]
    values = call(*(f"GET {k}" for k in keys)) if keys else []
    digest = hashlib.sha256("\n".join(f"{k}={v}" for k, v in zip(keys, values)).encode())
    return len(keys), digest.hexdigest()[:16]


def resources(action):
    on_client_side(["resources", action])
    record = STATE / "resources.json"
    if action == "create":
        call(*(f"PUT tenant-{i:03d} {hashlib.sha256(str(i).encode()).hexdigest()}"
               for i in range(KEYS)))
        (STATE / "etc" / "local.conf").write_text(
            "# operator settings, kept across upgrades\n"
            + "".join(f"{k} = {v}\n" for k, v in {**LOCAL_CONF, **TUNING}.items()))
        call("RELOAD")  # the operator's settings take effect now, not at the next restart
        count, digest = snapshot()
        record.write_text(json.dumps({"pid": pid(), "keys": count, "checksum": digest}))
        print(f"ok service: kvd answering, pid {pid()}")
        print(f"ok data: {count} keys stored, checksum {digest}")
        print(f"ok config: {len(LOCAL_CONF)} values in local.conf")
        return 0
    if action == "verify":
        before = json.loads(record.read_text())
        try:
            answer = call("PING")[0]
        except OSError as exc:
            print(f"not ok service: kvd does not answer on {server()[0]}:{server()[1]}: {exc}")
            return 1
        now = pid()
        restarted = "" if now == before["pid"] else f" (restarted: pid {before['pid']} -> {now})"
        print(f"ok service: {answer}{restarted}")
        failed = False
        count, digest = snapshot()
        if (count, digest) == (before["keys"], before["checksum"]):
            print(f"ok data: {count} keys, checksum {digest} unchanged")
        else:
            failed = True
            print(f"not ok data: {count} of {before['keys']} keys left, checksum {digest} "
                  f"(was {before['checksum']})")
        answers = call(*(f"CONF {k}" for k in LOCAL_CONF))
        values = {k: a.removeprefix("CONF ").strip() for k, a in zip(LOCAL_CONF, answers)}
        if values == LOCAL_CONF:
            print(f"ok config: {len(values)} values in effect")
        else:
            failed = True
            print(f"not ok config: in effect {values}, expected {LOCAL_CONF}")
        return 1 if failed else 0
    if action == "destroy":
        keys = call("KEYS")[0].split()[1:]
        if keys:
            call(*(f"DEL {k}" for k in keys))
        (STATE / "etc" / "local.conf").unlink(missing_ok=True)
        record.unlink(missing_ok=True)
        print(f"ok cleanup: {len(keys)} keys and local.conf removed")
        return 0
    print(f"unknown resources action {action!r}", file=sys.stderr)
    return 2


def state():
    """The snapshot hook: what kvd runs with, as `key value` lines, asked of kvd itself."""
    on_client_side(["snapshot"])
    print(f"service.version {call('PING')[0].split()[2].removeprefix('v')}")
    config = json.loads(call("CONFIG")[0].removeprefix("CONFIG "))
    for key, value in sorted(config.items()):
        print(f"config.{key} {value}")
    layout = STATE / "data" / ".layout"
    print(f"data.layout {layout.read_text().strip() if layout.exists() else 'none'}")
    return 0


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "start":
        return start()
    if command == "wait":
        return wait()
    if command == "stop":
        return stop()
    if command == "resources":
        return resources(args[0])
    if command == "snapshot":
        return state()
    print(f"usage: kvctl start|stop|resources ACTION|snapshot (not {command!r})",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
'''

API_RESOURCES = """#!/bin/sh
# resources create|verify|destroy: the tenant data and the operator configuration held by kvd.
exec "$CERTIFIER_RECIPE_DIR/kvctl" resources "$1"
"""

API_SNAPSHOT = """#!/bin/sh
# snapshot: kvd's effective state (version, every setting in effect, data layout) as key value
# lines, for Certifier to diff across the upgrade.
exec "$CERTIFIER_RECIPE_DIR/kvctl" snapshot
"""

KVD = r'''#!/usr/bin/env python3
"""kvd: a small key-value service over TCP that keeps one file per key in its data folder.

Commands, one per line: PING, PUT key value, GET key, DEL key, KEYS, CONF name, CONFIG (every
setting in effect, as JSON), RELOAD (read the configuration files again).
"""
import argparse
import json
import os
import re
import socketserver
from pathlib import Path

VERSION = "1"
KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def read_config(paths):
    values = {}
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not key.strip().startswith("#"):
                    values[key.strip()] = value.strip()
    return values


def settings(paths):
    """Every setting in effect: the files in order, a later one winning."""
    return read_config(paths)


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for raw in self.rfile:
            words = raw.decode(errors="replace").split(maxsplit=2)
            if words:
                self.wfile.write((self.server.answer(words) + "\n").encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, data, config_paths):
        self.data = data
        self.config_paths = config_paths
        self.config = settings(config_paths)
        super().__init__(address, Handler)

    def answer(self, words):
        op, args = words[0].upper(), words[1:]
        if op == "PING":
            return f"PONG kvd v{VERSION} pid {os.getpid()}"
        if op == "KEYS":
            return "KEYS " + " ".join(sorted(p.name for p in self.data.iterdir()
                                             if KEY.match(p.name)))
        if op == "CONF" and len(args) == 1:
            return "CONF " + self.config.get(args[0], "")
        if op == "CONFIG":
            return "CONFIG " + json.dumps(self.config, sort_keys=True)
        if op == "RELOAD":
            self.config = settings(self.config_paths)
            return "OK"
        if not args or not KEY.match(args[0]):
            return "ERR bad request"
        path = self.data / args[0]
        if op == "PUT" and len(args) == 2:
            temp = self.data / f".{args[0]}.tmp"
            temp.write_text(args[1])
            temp.replace(path)
            return "OK"
        if op == "GET":
            return f"VALUE {path.read_text()}" if path.is_file() else "MISSING"
        if op == "DEL":
            path.unlink(missing_ok=True)
            return "OK"
        return "ERR unknown command"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, action="append", default=[])
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8774)
    parser.add_argument("--pidfile", type=Path)
    opts = parser.parse_args()
    server = Server((opts.listen, opts.port), opts.data, opts.config)
    if opts.pidfile:
        opts.pidfile.write_text(str(os.getpid()))
    server.serve_forever()


if __name__ == "__main__":
    main()
'''

# kvd 2 gives every setting a default. The bad release applies the defaults *over* the files
# read (dict.update), so the operator's max_clients = 512 in local.conf silently becomes 64 —
# the data and local.conf itself stay as they were. The fix applies them under the files.
_KVD_SETTINGS = "    return read_config(paths)\n"
_KVD_DEFAULTS = 'DEFAULTS = {"max_clients": "64", "idle_timeout_s": "30"}\n\n\ndef settings('
KVD_V2_RESETS = KVD.replace('VERSION = "1"', 'VERSION = "2"').replace(
    "def settings(", _KVD_DEFAULTS).replace(
    _KVD_SETTINGS, "    config = read_config(paths)\n"
                   "    config.update(DEFAULTS)  # every setting gets a default\n"
                   "    return config\n")
KVD_V2_FIXED = KVD.replace('VERSION = "1"', 'VERSION = "2"').replace(
    "def settings(", _KVD_DEFAULTS).replace(
    _KVD_SETTINGS, "    return {**DEFAULTS, **read_config(paths)}  # the files win\n")
UPGRADE_NOTES = """# What an upgrade to this release may change (docs/recipes.md in Certifier).
upgrade:
  - key: service.version
    note: kvd 2 gives every setting a default (max_clients 64, idle_timeout_s 30).
"""

MIGRATE_GOOD = r'''#!/usr/bin/env python3
"""Bring kvd's data folder to this release's layout (v1: one file per key)."""
import sys
from pathlib import Path

data = Path(sys.argv[1])
data.mkdir(parents=True, exist_ok=True)
(data / ".layout").write_text("1\n")
print(f"data layout v1 in {data}: nothing to migrate")
'''

MIGRATE_DROPS_STATE = r'''#!/usr/bin/env python3
"""Prepare kvd's data folder for the v2 layout."""
import shutil
import sys
from pathlib import Path

data = Path(sys.argv[1])
data.mkdir(parents=True, exist_ok=True)
# Start from a clean folder so no v1 leftovers confuse the v2 reader.
for entry in data.iterdir():
    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
(data / ".layout").write_text("1\n")
print(f"data layout prepared in {data}")
'''

MIGRATE_FIXED = r'''#!/usr/bin/env python3
"""Bring kvd's data folder to this release's layout (v1: one file per key); keeps every key."""
import sys
from pathlib import Path

data = Path(sys.argv[1])
data.mkdir(parents=True, exist_ok=True)
stale = [p for p in data.glob(".*.tmp")]  # only half-written values are safe to drop
for path in stale:
    path.unlink()
(data / ".layout").write_text("1\n")
print(f"data layout v1 in {data}: {len(stale)} stale temporary files removed")
'''

ROUTES_GOOD = """# host  type         destination
# The future floating-IP range: nothing may route there yet.
h1      unreachable  198.19.255.0/24
"""

ROUTES_CUT = ROUTES_GOOD + """# The old storage host is retired: send its traffic nowhere.
h1      unreachable  h2
"""

INITIAL: dict[str, tuple[dict[str, str], str]] = {
    "netpolicy": ({"netpolicy.conf": f"egress_rate_mbit = {GOOD_RATE_MBIT}\n"},
                  "Initial egress policy"),
    "api": ({"api.conf": "workers = 4\nport = 8774\n", "kvd.py": KVD, "migrate.py": MIGRATE_GOOD},
            "Initial API service"),
    "routing": ({"routes.conf": ROUTES_GOOD}, "Initial static routes"),
    "storage": ({"storage.conf": "backend = file\ncache = writeback\n"},
                "Initial storage backend"),
}


@dataclass(frozen=True)
class Push:
    """One upstream commit the scenario makes; ``expect`` is in the right excuse (bad ones)."""

    component: str
    files: dict[str, str]
    title: str
    expect: tuple[str, ...] = ()
    what: str = ""


BAD_COMMITS: tuple[Push, ...] = (
    Push("netpolicy", {"netpolicy.conf": f"egress_rate_mbit = {BAD_RATE_MBIT}\n"},
         "Lower the default egress rate to leave headroom for tenants",
         ("bandwidth", "throughput_gbps"),
         f"halves bandwidth: egress {GOOD_RATE_MBIT} -> {BAD_RATE_MBIT} Mbit/s with tc"),
    Push("routing", {"routes.conf": ROUTES_CUT},
         "Send traffic for the retired storage host nowhere",
         ("ping", "cannot reach"),
         "cuts h2 off: an unreachable route to h2's address on h1"),
    Push("storage", {"storage.conf": "backend = file\ncache = writethrough\n"},
         "Default to write-through caching for durability",
         ("storage", "write"),
         "slows writes: write-through makes every write synchronous"),
    Push("api", {"migrate.py": MIGRATE_DROPS_STATE},
         "Prepare the data folder for the v2 layout",
         ("upgrade", "verify api/data"),
         "drops state on upgrade: the migration empties the data folder"),
    # On top of the data-dropping commit (api's history is linear), so it fixes the migration
    # too: the data survives, and only the configuration reset is left to catch.
    Push("api", {"kvd.py": KVD_V2_RESETS, "migrate.py": MIGRATE_FIXED,
                 ".certifier/upgrade-notes.yaml": UPGRADE_NOTES},
         "kvd 2: give every setting a default; keep every key when preparing the data folder",
         ("upgrade changed api config.max_clients: 512 → 64",
          "not declared in the candidate's upgrade notes"),
         "resets an operator setting on upgrade: kvd 2's defaults override local.conf "
         "(max_clients 512 -> 64); the data is kept"),
)

FIX_COMMITS: tuple[Push, ...] = (
    Push("netpolicy", {"netpolicy.conf": f"egress_rate_mbit = {GOOD_RATE_MBIT}\n"},
         "Revert the lower egress rate: tenants got half the bandwidth"),
    Push("routing", {"routes.conf": ROUTES_GOOD},
         "Revert the route for the retired host: h2 is still in service"),
    Push("storage", {"storage.conf": "backend = file\ncache = writeback\n"},
         "Back to write-back caching; durability comes from the journal"),
    Push("api", {"kvd.py": KVD_V2_FIXED},
         "Let the operator's settings override kvd's defaults again"),
)


@dataclass(frozen=True)
class DemoWorld:
    root: Path
    config_file: Path
    repos: dict[str, Path]


def _git(repo: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo),
        "GIT_AUTHOR_NAME": "Demo Upstream", "GIT_AUTHOR_EMAIL": "upstream@demo.invalid",
        "GIT_COMMITTER_NAME": "Demo Upstream", "GIT_COMMITTER_EMAIL": "upstream@demo.invalid",
    }
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    """Write files into an upstream repository and commit them; returns the new sha."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "--", *files)
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def head(repo: Path) -> tuple[str, str]:
    """(sha, title) of the repository's head."""
    return _git(repo, "rev-parse", "HEAD"), _git(repo, "log", "-1", "--format=%s")


def _recipe(folder: Path, hooks: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in hooks.items():
        hook = folder / name
        hook.write_text(text)
        hook.chmod(0o755)
    return folder


RECIPES: dict[str, dict[str, str]] = {
    "netpolicy": {"deploy": NETPOLICY_DEPLOY},
    "api": {"deploy": API_DEPLOY, "upgrade": API_UPGRADE, "resources": API_RESOURCES,
            "snapshot": API_SNAPSHOT, "kvctl": KVCTL},
    "routing": {"deploy": ROUTING_DEPLOY},
    "storage": {"deploy": STORAGE_DEPLOY},
}

THRESHOLDS = """thresholds:
  # Loopback-speed numbers are noisy: a generous default, tight where a demo commit aims.
  default: {max_worse_pct: 60}
  metrics:
    bandwidth.throughput_gbps: {max_worse_pct: 25}
    # Write-through is 4-20x slower here; a busy machine can cost a good run 70 %.
    storage.rand_write_iops: {max_worse_pct: 70}
    storage.rand_write_mbps: {max_worse_pct: 70}
    # 1 MiB writes at queue depth 1 swing by 3x from run to run on a loop device: shown, not
    # judged closely.
    storage.seq_write_mbps: {max_worse_pct: 90}
    storage.seq_write_iops: {max_worse_pct: 90}
    bandwidth.udp_throughput_gbps: {max_worse_pct: 25}
    bandwidth.retransmits: {max_worse_pct: 1000, min_abs: 1000}
    bandwidth.cpu_sender_pct: {max_worse_pct: 1000, min_abs: 50}
    bandwidth.cpu_receiver_pct: {max_worse_pct: 1000, min_abs: 50}
    bandwidth.udp_jitter_ms: {max_worse_pct: 1000, min_abs: 1.0}
    bandwidth.udp_loss_pct: {max_worse_pct: 1000, min_abs: 25}
    ping.rtt_min_ms: {max_worse_pct: 300, min_abs: 1.0}
    ping.rtt_avg_ms: {max_worse_pct: 300, min_abs: 1.0}
    ping.rtt_p50_ms: {max_worse_pct: 300, min_abs: 1.0}
    ping.rtt_p99_ms: {max_worse_pct: 300, min_abs: 2.0}
    ping.rtt_max_ms: {max_worse_pct: 1000, min_abs: 5.0}
    ping.loss_pct: {max_worse_pct: 0, min_abs: 5.0}
    ping.longest_outage_ms: {max_worse_pct: 1000, min_abs: 200}
    storage.seq_write_clat_p50_us: {max_worse_pct: 400, min_abs: 5000}
    storage.seq_write_clat_p99_us: {max_worse_pct: 1000, min_abs: 20000}
    storage.seq_read_clat_p50_us: {max_worse_pct: 400, min_abs: 5000}
    storage.seq_read_clat_p99_us: {max_worse_pct: 1000, min_abs: 20000}
    storage.rand_write_clat_p50_us: {max_worse_pct: 400, min_abs: 5000}
    storage.rand_write_clat_p99_us: {max_worse_pct: 1000, min_abs: 20000}
    storage.rand_read_clat_p50_us: {max_worse_pct: 400, min_abs: 5000}
    storage.rand_read_clat_p99_us: {max_worse_pct: 1000, min_abs: 20000}
    upgrade.outage_s: {max_worse_pct: 100, min_abs: 1.0}
    upgrade.lost_packets: {max_worse_pct: 100, min_abs: 20}
    upgrade.duration_s: {max_worse_pct: 300, min_abs: 10}
"""


def upstreams(root: Path, initial: dict[str, tuple[dict[str, str], str]] = INITIAL,
              recipes: dict[str, dict[str, str]] = RECIPES) -> dict[str, Path]:
    """Create ``root/upstream/<name>`` repositories, each with its good first commit (kept if
    already there), and the operator's recipes in ``root/recipes/<name>``; name → repository.

    Other worlds (benchmarks/noise_harness.py) pass components and recipes of their own."""
    root.mkdir(parents=True, exist_ok=True)
    repos: dict[str, Path] = {}
    for name, (files, message) in initial.items():
        repo = root / "upstream" / name
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q", "-b", "main")
            commit(repo, files, message)
        repos[name] = repo
    for name, hooks in recipes.items():
        _recipe(root / "recipes" / name, hooks)
    return repos


def components_yaml(repos: dict[str, Path]) -> str:
    """The ``components:`` entries of a config for ``repos``, with recipes as :func:`upstreams`
    writes them (relative to the config file's folder)."""
    return "".join(
        f"  - name: {name}\n    source: git\n    url: {repo}\n    branch: main\n"
        f"    recipe: recipes/{name}\n"
        for name, repo in repos.items()
    )


def build(root: Path, *, driver: str = "netns", subnet: str = "198.18.0.0/24",
          soak_duration: str = "15s", soak_interval: str = "8s", min_runs: int = 2,
          infra_backoff: str = "2s") -> DemoWorld:
    """Create the repositories (each with a good first commit), recipes and a config file."""
    repos = upstreams(root)
    components = components_yaml(repos)
    config = root / "certifier.yaml"
    config.write_text(
        "# Generated by `certifier demo`: a soak of seconds instead of a week.\n"
        f"components:\n{components}"
        "testbeds:\n"
        f"  - name: demo\n    driver: {driver}\n    role: gate\n    hosts: [h1, h2]\n"
        f"    subnet: {subnet}\n"
        f"soak:\n  duration: {soak_duration}\n  interval: {soak_interval}\n"
        f"  min_runs: {min_runs}\n  max_infra_retries: 2\n  infra_backoff: {infra_backoff}\n"
        # A soak of seconds can never reach the statistics' level for every series: promote
        # when the time is up, with the series it could not decide in the excuses — unless one
        # leans worse (a breakage that the gate's confirmation run missed): more runs, then
        # hold. With 2 A/B rounds a run, the write-through commit's -56 % random-write rate was
        # seen leaning after 5 soak runs and needed a sixth to be decided: 8 leave room.
        "  max_extra_runs: 8\n"
        f"{THRESHOLDS}"
        # The statistical detector wants 20 known-good runs per testbed; a demo of minutes has
        # a handful, so the margin above judges and control runs would only cost time.
        "detector:\n  baseline_every: 0\n  min_candidate_runs: 2\n"
        # The fifth bad commit sits on top of the fourth in api's history: culprit finding would
        # re-test that range and name the fourth (which fails for its own reason) after minutes
        # of bisect runs. Each bad commit here is judged alone, so the holds need no search.
        "bisection:\n  enabled: false\n"
        # The upstream repositories are folders on this machine: the source policy allows
        # local paths only under the folders it names (docs/architecture.md, Security).
        "sources:\n  local_paths: [upstream]\n"
        # Gate runs measure the candidate and the known-good's control side by side (A/B); a
        # soak of seconds gets two A/B rounds per soak run instead of four.
        "ab:\n  soak_rounds: 2\n"
        # Seconds, not minutes: one direction of TCP; writes at queue depth 1 (a database's
        # commit path, where a synchronous write costs the most), random writes first, on a
        # fresh file, where a write also allocates until the file is covered; the upgrade suite
        # in gate runs only (it is deterministic: soak runs would repeat it for nothing).
        "suites:\n  ping: {count: 20, interval: 0.02}\n"
        "  bandwidth: {duration_s: 1, reverse: false, parallel_streams: 0, udp_rate_mbit: 0}\n"
        "  storage: {size: 16M, runtime_s: 1, jobs: [rand_write, seq_write], iodepth: 1}\n"
        "  upgrade: {ping_interval: 0.02, settle_s: 0.3, run_kinds: [gate]}\n"
        "scheduler:\n  reconcile_interval: 2s\n  run_timeout: 5m\n  hook_timeout: 60s\n"
    )
    return DemoWorld(root, config, repos)
