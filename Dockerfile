# syntax=docker/dockerfile:1
# The certifier image: the api, the worker and beat of docker-compose.yml all run from it.
#
# Privileges: the worker builds testbeds out of Linux network namespaces (`ip netns`, veth pairs,
# `tc` shaping) and runs ping, iperf3 and fio inside them. That needs CAP_NET_ADMIN and
# CAP_SYS_ADMIN (`ip netns add` bind-mounts under /run/netns), so the worker cannot run as an
# unprivileged user: docker-compose.yml runs it as root in a privileged container. Its namespaces
# live inside the container's own network namespace, not the host's. The api and beat need no
# privileges and run as the user `certifier` that this image defaults to.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CERTIFIER_DATA_DIR=/var/lib/certifier

# The testbed's tools (Debian bookworm: iperf3 3.12, fio 3.33), git for component checkouts,
# ext4 and loop devices for the storage suite's scratch filesystem, and ssh for `ssh` testbeds.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iproute2 iperf3 fio iputils-ping git ca-certificates e2fsprogs mount openssh-client \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --home-dir /var/lib/certifier --shell /usr/sbin/nologin certifier \
 && install -d -o certifier -g certifier /var/lib/certifier /etc/certifier

WORKDIR /opt/certifier

# Dependencies first (read from pyproject.toml), so a source change does not reinstall them.
COPY pyproject.toml README.md* ./
RUN python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', *deps])"

# Editable on purpose: the migrations are found next to the package (certifier/db/migrate.py
# looks for ../../migrations), and that only holds when the package runs from this tree.
COPY migrations ./migrations
COPY workers ./workers
COPY certifier ./certifier
RUN pip install --no-deps -e . && certifier --help >/dev/null

USER certifier
EXPOSE 8000
CMD ["certifier", "serve", "--host", "0.0.0.0", "--port", "8000"]
