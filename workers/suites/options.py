"""Suite options take their defaults and bounds from the suite's config section.

The config (``suites.ping`` … in ``certifier/settings_policy.py``) declares each option once,
with its default and its bounds; a suite's options dataclass copies the defaults from it and
checks itself against it, so ``PingOptions()`` runs what a config without a ``suites.ping``
section runs, and an option the config would refuse is refused here too. Options that only the
code sets (timeouts, the A/B rounds' shares) live on the dataclass alone.
"""

from __future__ import annotations

from pydantic import BaseModel


def within(section: type[BaseModel], options: object) -> None:
    """Raise ValueError (pydantic's ValidationError) if ``options`` break ``section``'s bounds."""
    section.model_validate({name: getattr(options, name) for name in section.model_fields})
