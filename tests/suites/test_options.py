"""One declaration per suite option: the options a suite runs with take their defaults and bounds
from the suite's config section, so a run without a config section and a suite called with its
default options measure the same way."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from certifier.settings_policy import (
    BandwidthSuiteConfig,
    PingSuiteConfig,
    StorageSuiteConfig,
    SuitesConfig,
)
from workers.suites import SUITES, bandwidth, ping, storage

SECTIONS: list[tuple[type[Any], type[BaseModel]]] = [
    (ping.PingOptions, PingSuiteConfig),
    (bandwidth.BandwidthOptions, BandwidthSuiteConfig),
    (storage.StorageOptions, StorageSuiteConfig),
]


@pytest.mark.parametrize(("options", "section"), SECTIONS)
def test_the_default_options_are_the_config_sections_defaults(
        options: type[Any], section: type[BaseModel]) -> None:
    declared = section().model_dump()
    made = options()
    assert {name: getattr(made, name) for name in declared} == declared
    assert set(declared) <= {f.name for f in fields(options)}
    assert made == options(**declared)  # what the runner builds from an absent section


def test_every_configured_suite_is_covered_above() -> None:
    configured = set(SuitesConfig.model_fields) - {"enabled", "upgrade"}  # upgrade: from a plan
    assert configured == {section.__name__.removesuffix("SuiteConfig").lower()
                          for _, section in SECTIONS}
    assert configured <= set(SUITES)


@pytest.mark.parametrize(("options", "section", "bad"), [
    (ping.PingOptions, PingSuiteConfig, {"count": 0}),
    (ping.PingOptions, PingSuiteConfig, {"interval": 30.0}),
    (ping.PingOptions, PingSuiteConfig, {"concurrency": 65}),
    (bandwidth.BandwidthOptions, BandwidthSuiteConfig, {"duration_s": 601.0}),
    (bandwidth.BandwidthOptions, BandwidthSuiteConfig, {"retries": 11}),
    (bandwidth.BandwidthOptions, BandwidthSuiteConfig, {"pairs": ("h1->h2@",)}),
    (storage.StorageOptions, StorageSuiteConfig, {"iodepth": 1025}),
    (storage.StorageOptions, StorageSuiteConfig, {"size": "0M"}),
])
def test_what_the_config_refuses_the_options_refuse(
        options: type[Any], section: type[BaseModel], bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        section(**bad)
    with pytest.raises(ValueError):
        options(**bad)
