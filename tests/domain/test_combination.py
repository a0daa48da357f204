import pytest

from certifier.domain.combination import Combination, InvalidCombination

A = "a" * 40
B = "b" * 40


def test_hash_does_not_depend_on_order() -> None:
    one = Combination.of({"nova": A, "neutron": B})
    two = Combination.of({"neutron": B, "nova": A})
    assert one.hash == two.hash
    assert one == two


def test_hash_changes_when_any_commit_changes() -> None:
    assert Combination.of({"nova": A}).hash != Combination.of({"nova": B}).hash


def test_hash_is_stable_across_processes() -> None:
    # sha256 over "name sha\n" lines in name order: a fixed vector guards against silent changes.
    combo = Combination.of({"neutron": B, "nova": A})
    assert combo.hash == "6712862a0d4f144943b6a7b9d2831ab296a9da35683dbf4249656a043cc72245"


def test_changed_against_base_names_only_differing_components() -> None:
    base = Combination.of({"nova": A, "neutron": A})
    combo = base.replace(neutron=B)
    assert combo.changed_against(base) == ["neutron"]
    assert combo.changed_against(None) == ["neutron", "nova"]


@pytest.mark.parametrize(
    "commits",
    [{"Nova": A}, {"nova;rm": A}, {"../x": A}, {"nova": "abc"}, {"nova": "g" * 40},
     {"nova": A.upper()}],
)
def test_rejects_unsafe_names_and_bad_shas(commits: dict[str, str]) -> None:
    with pytest.raises(InvalidCombination):
        Combination.of(commits)


def test_is_a_read_only_mapping() -> None:
    combo = Combination.of({"nova": A})
    assert combo["nova"] == A
    assert list(combo) == ["nova"]
    with pytest.raises(KeyError):
        combo["neutron"]
