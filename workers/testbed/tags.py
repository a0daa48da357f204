"""Run tags: the names every namespace, link and file of a run's testbed carries.

A tag is ``r`` + the instance id (four characters derived from the data folder, so two Certifier
instances sharing a machine — a demo, a test run, production — never pick the same names) + the
run id in base 36. It stays within the 12 characters that keep interface names under the
kernel's 15, for the first 36**7 (78 billion) runs.

An A/B run also builds a twin *control* testbed for the known-good beside the candidate's: its
tag is the run tag with a ``0`` between the instance id and the run id. A run id in base 36 never
starts with ``0``, so no control tag is ever another run's tag, and it keeps the instance prefix,
so the janitor reaps it like any other tag of this instance (for runs below 36**6, 2.2 billion).
A run's calibration probe (``workers/calibration.py``) takes ``00`` there, for the same reasons.
"""

from __future__ import annotations

import hashlib
import string

from certifier.settings import Settings

_DIGITS = string.digits + string.ascii_lowercase


def _base36(number: int) -> str:
    if number < 0:
        raise ValueError("run ids are positive")
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if number == 0:
            return text


def instance_id(settings: Settings) -> str:
    digest = hashlib.sha256(str(settings.data_dir.resolve()).encode()).digest()
    return _base36(int.from_bytes(digest[:4], "big"))[-4:].rjust(4, "0")


def run_tag_prefix(settings: Settings) -> str:
    return f"r{instance_id(settings)}"


def run_tag(settings: Settings, run_id: int) -> str:
    return f"{run_tag_prefix(settings)}{_base36(run_id)}"


def control_tag(settings: Settings, run_id: int) -> str:
    """The tag of run ``run_id``'s control testbed (the known-good measured beside it)."""
    return f"{run_tag_prefix(settings)}0{_base36(run_id)}"


def probe_tag(settings: Settings, run_id: int) -> str | None:
    """The tag of run ``run_id``'s calibration probe testbed (``workers/calibration.py``).

    The run-tag prefix, then ``00``, then the run id: base 36 of a run id never starts with
    ``0``, so this never names a run's own testbed nor a control testbed (one ``0``), and the
    janitor's orphan scan (which covers the prefix) reaps it like any run's. None beyond
    36**5 runs (12 characters).
    """
    tag = f"{run_tag_prefix(settings)}00{_base36(run_id)}"
    return tag if len(tag) <= 12 else None
