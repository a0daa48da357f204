"""Static files of the dashboard, and the charting library taken from its installed package.

Our own CSS and scripts live in ``certifier/web/static`` and are served with a content hash in
their URL, so browsers may cache them for a year and still never run a stale script after an
upgrade. The charts use plotly.js, which is not copied into this repository: it is the
``plotly.min.js`` that the ``plotly`` package from PyPI ships in ``plotly/package_data``, found
without importing the (large) Python package and served gzipped from memory. Without the package
the pages simply show their tables instead of charts.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
IMMUTABLE = "public, max-age=31536000, immutable"


def plotly_js() -> tuple[Path, str] | None:
    """The installed plotly.js and the plotly package's version, if the package is there."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            try:
                version = importlib.metadata.version("plotly")
            except importlib.metadata.PackageNotFoundError:
                version = "0"
            return path, version
    return None


@dataclass
class Asset:
    path: Path
    media_type: str
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _body: bytes | None = None
    _gzipped: bytes | None = None

    def body(self, gzipped: bool) -> bytes:
        with self._lock:
            if self._body is None:
                self._body = self.path.read_bytes()
                self._gzipped = gzip.compress(self._body, compresslevel=6, mtime=0)
            assert self._gzipped is not None
            return self._gzipped if gzipped else self._body


class Assets:
    """Every file the pages may load, by URL path, and the versioned URL to put in pages."""

    def __init__(self) -> None:
        self.files: dict[str, Asset] = {}
        self.urls: dict[str, str] = {}
        for path in sorted(STATIC.iterdir()):
            if path.is_file() and path.suffix in MEDIA_TYPES:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
                self.files[path.name] = Asset(path, MEDIA_TYPES[path.suffix])
                self.urls[path.name] = f"/static/{path.name}?v={digest}"
        found = plotly_js()
        self.plotly_url: str | None = None
        if found is not None:
            path, version = found
            self.files["vendor/plotly.min.js"] = Asset(path, MEDIA_TYPES[".js"])
            self.plotly_url = f"/static/vendor/plotly.min.js?v={version}"

    def url(self, name: str) -> str:
        return self.urls[name]
