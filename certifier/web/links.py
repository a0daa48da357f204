"""Links to upstream: where a commit can be read on its forge, when the URL pattern is known.

Only http(s) repository URLs on a forge whose commit URL we know get a link (GitHub, GitLab,
Gitea/Forgejo hosts such as opendev.org and codeberg.org, Bitbucket, and Gerrit's search by sha);
anything else is shown as the bare sha. Credentials in a URL are never repeated in a link.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

from certifier.domain.combination import SHA_RE

_PATH_RE = re.compile(r"^[A-Za-z0-9._~/-]+$")
_GITEA_HOSTS = frozenset({"opendev.org", "codeberg.org", "gitea.com"})


def commit_url(source: str, repo_url: str, sha: str) -> str | None:
    """The web page of ``sha`` in ``repo_url``'s forge, or None when we cannot tell."""
    if not SHA_RE.match(sha):
        return None
    try:
        parts = urlsplit(repo_url.strip())
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return None
    path = parts.path.strip("/").removesuffix(".git").strip("/")
    if not _PATH_RE.match(path or "/") or ".." in path:
        return None
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    base = f"{origin}/{quote(path)}" if path else origin
    if host == "github.com" or (source == "github" and path):
        return f"{base}/commit/{sha}"
    if host == "gitlab.com" or host.startswith("gitlab.") or (source == "gitlab" and path):
        return f"{base}/-/commit/{sha}"
    if host in _GITEA_HOSTS and path:
        return f"{base}/commit/{sha}"
    if host == "bitbucket.org" and path:
        return f"{base}/commits/{sha}"
    if source == "gerrit":
        return f"{origin}/q/{sha}"
    return None
