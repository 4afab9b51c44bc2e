"""The one rule for naming registry versions: "registry:<number>"; any other name is external."""

from app.models.model_version import (
    names_the_registry,
    registry_version_name,
    registry_version_number,
)


def test_a_registry_name_round_trips() -> None:
    assert registry_version_name(12) == "registry:12"
    assert registry_version_number(registry_version_name(12)) == 12


def test_external_and_malformed_names_have_no_number() -> None:
    for name in ("bert-v2", "registry:", "registry:x1", "registry:²", "my-registry:3"):
        assert registry_version_number(name) is None, name
    assert names_the_registry("registry:x1") and not names_the_registry("my-registry:3")
