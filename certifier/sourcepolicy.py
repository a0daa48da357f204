"""The source URL policy: which repository and forge API URLs a component may name.

The worker runs as root and fetches every component's ``url`` (and asks its ``api_url``), so a
URL is a request made from inside the operator's network. The ``sources`` section of the config
says which URLs are fine, and it applies alike to the config file (a clear error when it loads)
and to ``POST /api/v1/components`` (a 422):

- ``schemes``: URL schemes allowed (default ``https`` and ``ssh``; ``ssh`` covers git's
  ``user@host:path`` form too). ``http`` and ``git`` travel in clear text: add them knowingly.
- ``hosts``: if given, only these hosts (``git.example.org``, or ``*.example.org`` for any
  name under it). Empty: any host, except private ones (below).
- ``private_hosts``: ``false`` (the default) refuses ``localhost``, addresses that are not
  global (loopback, private, link-local, carrier-grade NAT, reserved) and numeric host forms
  (``2130706433``, ``0x7f.1``) unless ``hosts`` lists them: a registration must not turn the
  worker into a client of internal services. The check is on the name as written; a public
  name that resolves to a private address is only stopped by a ``hosts`` list.
- ``local_paths``: folders whose repositories may be tracked by local path or ``file://``
  URL (relative entries are relative to the config file). Empty (the default): none.

Refusals never say whether a local path exists: the message depends only on the text.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*\Z")
# git's scp-like syntax: [user@]host:path, a colon before any slash and no "://".
_SCP = re.compile(r"^(?:[^@/:\s]+@)?(?P<host>\[[^\]/]+\]|[^@/:\s\[]+):(?!//)")
# 2130706433, 0x7f.1, 017700000001, 127.1: forms inet_aton reads as an IPv4 address.
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?\Z")


class SourceRefused(ValueError):
    """A URL the policy does not allow; the message names the rule, never the file system."""


class SourcePolicy(BaseModel):
    """The ``sources`` section of the config file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schemes: tuple[str, ...] = ("https", "ssh")
    hosts: tuple[str, ...] = ()
    private_hosts: bool = False
    local_paths: tuple[Path, ...] = ()

    @field_validator("schemes")
    @classmethod
    def _schemes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not _SCHEME.match(s) or s in ("file", "ext", "fd")]
        if bad:
            raise ValueError(f"not an allowed URL scheme: {bad} (local repositories are "
                             "allowed through local_paths; git remote helpers never)")
        return tuple(s.lower() for s in v)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [h for h in v if not re.fullmatch(r"(\*\.)?[A-Za-z0-9_.:\[\]-]{1,253}", h)]
        if bad:
            raise ValueError(f"hosts are names or addresses, or *.domain: {bad}")
        return tuple(h.lower().strip("[]") for h in v)

    def under(self, base: Path) -> SourcePolicy:
        """The policy with relative ``local_paths`` made relative to ``base`` (the config
        file's folder)."""
        return self.model_copy(update={"local_paths": tuple(
            p if p.is_absolute() else base / p for p in self.local_paths)})

    # Checks -------------------------------------------------------------------------------

    def check_component(self, url: str, api_url: str | None) -> None:
        """Raise :class:`SourceRefused` unless ``url`` and ``api_url`` are allowed."""
        self.check_url(url)
        if api_url is not None:
            self.check_url(api_url, what="api_url", local=False)

    def check_url(self, url: str, *, what: str = "url", local: bool = True) -> None:
        if url.lower().startswith("file:"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost") or not local:
                raise SourceRefused(f"{what}: a file URL names no host")
            self._check_local(unquote(parts.path), what)
            return
        if "://" in url:
            scheme = url.split("://", 1)[0].lower()
            try:
                host = urlsplit(url).hostname
            except ValueError:
                host = None
            self._check_remote(scheme, host, what)
            return
        scp = _SCP.match(url)
        if scp is not None:
            self._check_remote("ssh", scp.group("host").strip("[]").lower(), what)
            return
        if not local:
            raise SourceRefused(f"{what}: must be a URL with a scheme and a host")
        self._check_local(url, what)

    def _check_remote(self, scheme: str, host: str | None, what: str) -> None:
        if scheme not in self.schemes:
            raise SourceRefused(f"{what}: the scheme {scheme!r} is not allowed by the config's "
                                f"sources.schemes ({', '.join(self.schemes) or 'none'})")
        if not host:
            raise SourceRefused(f"{what}: the URL names no host")
        if self.hosts:
            if not any(_host_matches(host, pattern) for pattern in self.hosts):
                raise SourceRefused(f"{what}: the host {host!r} is not in the config's "
                                    "sources.hosts")
            return
        if not self.private_hosts and _private(host):
            raise SourceRefused(f"{what}: {host!r} is a local or private host, which the "
                                "config's sources policy does not allow (sources.hosts or "
                                "sources.private_hosts)")

    def _check_local(self, path: str, what: str) -> None:
        if not self.local_paths:
            raise SourceRefused(f"{what}: local paths and file:// URLs are not allowed by the "
                                "config's sources policy (sources.local_paths)")
        if not Path(path).is_absolute():
            raise SourceRefused(f"{what}: a local repository path must be absolute")
        # realpath does not need the path to exist: the answer depends only on the text (and on
        # symlinks inside the allowed folders, which the operator made).
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(os.path.realpath(root)) for root in self.local_paths):
            raise SourceRefused(f"{what}: the path is not under a folder the config's "
                                "sources.local_paths allows")


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _private(host: str) -> bool:
    """Whether ``host`` as written names this machine or a non-global address."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return bool(_NUMERIC_HOST.match(host))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global
