"""Combinations: one commit per component, identified by a content hash.

The hash covers the sorted ``(component, sha)`` pairs, so the same combination always gets the
same identity and is never tested twice by accident, whatever order it was assembled in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")


class InvalidCombination(ValueError):
    """A combination with an invalid component name or sha."""


@dataclass(frozen=True, slots=True)
class Combination(Mapping[str, str]):
    """An immutable mapping component name → commit sha."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, commits: Mapping[str, str]) -> Combination:
        for name, sha in commits.items():
            if not NAME_RE.match(name):
                raise InvalidCombination(f"invalid component name {name!r}")
            if not SHA_RE.match(sha):
                raise InvalidCombination(f"invalid sha {sha!r} for component {name!r}")
        return cls(tuple(sorted(commits.items())))

    @property
    def hash(self) -> str:
        """sha256 over ``name sha`` lines in name order: stable across processes and versions."""
        text = "".join(f"{name} {sha}\n" for name, sha in self.pairs)
        return hashlib.sha256(text.encode()).hexdigest()

    def replace(self, **changes: str) -> Combination:
        merged = dict(self.pairs)
        merged.update(changes)
        return Combination.of(merged)

    def changed_against(self, base: Mapping[str, str] | None) -> list[str]:
        """Components whose commit differs from ``base`` (all of them when there is no base)."""
        if base is None:
            return [name for name, _ in self.pairs]
        return [name for name, sha in self.pairs if base.get(name) != sha]

    def __getitem__(self, key: str) -> str:
        for name, sha in self.pairs:
            if name == key:
                return sha
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)
