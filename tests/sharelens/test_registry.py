from datetime import datetime
from pathlib import Path

import pytest

from sharelens.errors import SharelensError
from sharelens.registry import Registry


def test_versions_increase_and_aliases_move(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    day = datetime(2026, 11, 23)
    v1 = reg.next_version("sharelens", day)
    reg.register("sharelens", v1)
    v2 = reg.next_version("sharelens", day)
    reg.register("sharelens", v2)
    assert (v1, v2) == ("v0001-20261123", "v0002-20261123")
    assert reg.resolve("sharelens")[0] == v2  # latest, no production yet
    reg.set_alias("sharelens", "production", v1)
    assert reg.resolve("sharelens")[0] == v1  # production wins over latest
    assert reg.resolve("sharelens", "latest")[0] == v2
    assert reg.resolve("sharelens", v2)[1] == tmp_path / "sharelens" / v2


def test_version_is_never_reused(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.register("m", "v0001-20261123")
    with pytest.raises(SharelensError) as e:
        reg.register("m", "v0001-20261123")
    assert e.value.code == "E224"
    (tmp_path / "m" / "v0007-20261101").mkdir(parents=True)  # a folder on disk counts as taken
    assert reg.next_version("m").startswith("v0008-")


@pytest.mark.parametrize("ref", ["../../etc/passwd", "v0001-20261123/../../x", "/abs", "nope", ""])
def test_unknown_or_hostile_refs_never_become_paths(tmp_path: Path, ref: str) -> None:
    reg = Registry(tmp_path)
    reg.register("m", "v0001-20261123")
    with pytest.raises(SharelensError) as e:
        reg.resolve("m", ref)
    assert e.value.code == "E223"


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SharelensError):
        Registry(tmp_path).register("../evil", "v0001-20261123")
    with pytest.raises(SharelensError):
        Registry(tmp_path).set_alias("m", "v0001-20261123", "v0001-20261123")
