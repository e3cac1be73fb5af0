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


# -- a damaged registry.json: a numbered error saying what to do, never a bare exception -------------
@pytest.mark.parametrize(("content", "code"), [
    (b"[]", "E229"),
    (b'{"models": []}', "E229"),
    (b'{"models": {"m": []}}', "E229"),
    (b'{"models": {"m": {"versions": {}, "aliases": {}}}}', "E229"),
    (b'{"models": {"m": {"versions": [{"created_at": "x"}], "aliases": {}}}}', "E229"),
    (b'{"models": {"m": {"versions": [{"version": 1}], "aliases": {}}}}', "E229"),
    (b'{"models": {"m": {"versions": [], "aliases": []}}}', "E229"),
    (b'{"models": {"m": {"versions": [], "aliases": {"production": null}}}}', "E229"),
    (b'{"models": {"m": {"versions": [], "aliases": {}}}, "x": "\xe9t\xe9"}', "E228"),
    (b"\xff\xfe{}", "E228"),
    (b'{"models": {', "E220"),
])
def test_damaged_registry_is_a_numbered_error(tmp_path: Path, content: bytes, code: str) -> None:
    (tmp_path / "registry.json").write_bytes(content)
    reg = Registry(tmp_path)
    for call in (lambda: reg.resolve("m"), lambda: reg.entry("m"), reg.models, lambda: reg.register("m", "v0002-20261123")):
        with pytest.raises(SharelensError) as e:
            call()
        assert e.value.code == code
        assert "restore it from a backup or repair it by hand" in e.value.message


def test_a_registry_of_the_right_shape_still_reads(tmp_path: Path) -> None:
    (tmp_path / "registry.json").write_text('{"format": "sharelens-registry/1", "models": {"m": {"versions": '
                                           '[{"version": "v0001-20261123", "summary": {}}], "aliases": '
                                           '{"latest": "v0001-20261123"}}}}', encoding="utf-8")
    assert Registry(tmp_path).resolve("m")[0] == "v0001-20261123"


@pytest.mark.parametrize("bad", ["v0001-20261123\n", "v٠٠٠١-20261123", "v0001-20261123 "])
def test_versions_match_whole_and_ascii(tmp_path: Path, bad: str) -> None:
    from sharelens.registry import check_version

    with pytest.raises(SharelensError) as e:
        check_version(bad)
    assert e.value.code == "E227"


@pytest.mark.parametrize("bad", ["staging\n", "prod\n", "x\r\n"])
def test_names_and_aliases_match_whole(tmp_path: Path, bad: str) -> None:
    from sharelens.registry import check_name

    reg = Registry(tmp_path)
    reg.register("m", "v0001-20261123")
    with pytest.raises(SharelensError) as e:
        reg.set_alias("m", bad, "v0001-20261123")
    assert e.value.code == "E225"
    with pytest.raises(SharelensError) as e:
        check_name(bad)
    assert e.value.code == "E226"
    assert bad not in reg.entry("m")["aliases"]
