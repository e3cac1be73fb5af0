"""The committed annotations are consistent: every settled label follows from the readings, the
agreement figures recompute from them, and the labels obey the spec."""

import csv
import json
from pathlib import Path

import pytest

from sharelens.labels import MOTIVES, SPEC_VERSION
from training.corpus.annotation import agreement, append_round
from training.corpus.splits import SPLIT_FILE, read_split_file

ANN = Path(__file__).resolve().parents[2] / "data" / "annotations"


def _rows(name: str) -> list[dict]:
    with (ANN / name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_settled_labels_follow_from_the_readings() -> None:
    readings = _rows("readings.csv")
    final = {r["post_id"]: r for r in _rows("motives.csv")}
    by_round: dict[str, dict[str, dict]] = {}
    for r in readings:
        by_round.setdefault(r["round"], {})[r["post_id"]] = r
    assert set(final) == set(by_round["first"])
    for pid, f in final.items():
        assert f["motive"] in MOTIVES and f["spec_version"] == SPEC_VERSION
        assert f["motive_secondary"] in ("", *MOTIVES) and f["motive_secondary"] != f["motive"]
        first, second = by_round["first"][pid], by_round.get("second", {}).get(pid)
        if second is not None and second["motive"] != first["motive"]:
            assert f["method"] == "adjudicated" and f["motive"] == by_round["third"][pid]["motive"]
        else:
            assert f["motive"] == first["motive"] and f["annotator"] == first["reader"]


def test_agreement_figures_recompute() -> None:
    committed = json.loads((ANN / "agreement.json").read_text())
    assert agreement(_rows("readings.csv")) == committed
    assert committed["double_read"] >= 1300 and committed["settled_by_third"] == committed["disagreements"]


def test_enough_annotations_and_a_held_out_annotated_test_set() -> None:
    splits = read_split_file(SPLIT_FILE)
    final = _rows("motives.csv")
    assert len(final) >= 7500
    assert all(splits[r["post_id"]] != "excluded" for r in final)
    assert sum(splits[r["post_id"]] == "test" for r in final) >= 400
    assert sum(splits[r["post_id"]] == "ood_cctv" for r in final) >= 300  # the out-of-domain motive test
    trainable = [r for r in final if splits[r["post_id"]] not in ("test", "ordinary_test", "ood_cctv", "ood_ced")]
    assert {splits[r["post_id"]] for r in trainable} <= {"train", "validation", "aux_cctv", "aux_ced", "aux_spam",
                                                          "ordinary_train", "ordinary_validation"}
    for motive in ("incentive", "help_seeking", "social_comparison"):  # hunted for in the visible sources
        assert sum(r["motive"] == motive for r in trainable) >= 100, motive


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_later_round_is_appended_settled_and_sorted(tmp_path: Path) -> None:
    out = tmp_path / "ann"
    out.mkdir()
    _write(out / "readings.csv", "post_id,round,reader,motive,motive_secondary,note\n"
                                 "b,first,r0,opinion,,\n")
    _write(out / "motives.csv", "post_id,motive,motive_secondary,annotator,method,spec_version\n"
                                "b,opinion,,r0,read,s/1\n")
    first = _write(tmp_path / "f.csv", "post_id,motive,motive_secondary\na,belonging,\nc,incentive,belonging\n")
    second = _write(tmp_path / "s.csv", "post_id,motive,motive_secondary\na,emotional_expression,\nc,incentive,\n")
    third = _write(tmp_path / "t.csv", "post_id,motive,motive_secondary\na,emotional_expression,belonging\n")
    figures = append_round(out, {"r1": first}, "s/1", ("r2", second), ("r3", third))
    final = {r["post_id"]: r for r in csv.DictReader((out / "motives.csv").open(encoding="utf-8"))}
    assert list(final) == ["a", "b", "c"]
    assert (final["a"]["motive"], final["a"]["annotator"], final["a"]["method"]) == ("emotional_expression", "r3",
                                                                                      "adjudicated")
    assert (final["c"]["motive"], final["c"]["method"], final["c"]["motive_secondary"]) == ("incentive",
                                                                                            "read-twice-agreed",
                                                                                            "belonging")
    assert figures["double_read"] == 2 and figures["disagreements"] == 1 and figures["settled_by_third"] == 1


def test_a_later_round_never_relabels_or_leaves_a_disagreement(tmp_path: Path) -> None:
    out = tmp_path / "ann"
    out.mkdir()
    _write(out / "readings.csv", "post_id,round,reader,motive,motive_secondary,note\nb,first,r0,opinion,,\n")
    _write(out / "motives.csv", "post_id,motive,motive_secondary,annotator,method,spec_version\n"
                                "b,opinion,,r0,read,s/1\n")
    with pytest.raises(ValueError, match="already annotated"):
        append_round(out, {"r1": _write(tmp_path / "f.csv", "post_id,motive,motive_secondary\nb,belonging,\n")}, "s/1")
    first = _write(tmp_path / "g.csv", "post_id,motive,motive_secondary\na,belonging,\n")
    second = _write(tmp_path / "s.csv", "post_id,motive,motive_secondary\na,opinion,\n")
    with pytest.raises(ValueError, match="no third reading"):
        append_round(out, {"r1": first}, "s/1", ("r2", second))
    with pytest.raises(ValueError, match="unknown motive"):
        append_round(out, {"r1": _write(tmp_path / "h.csv", "post_id,motive,motive_secondary\na,fame,\n")}, "s/1")
