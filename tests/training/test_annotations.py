"""The committed annotations are consistent: every settled label follows from the readings, the
agreement figures recompute from them, and the labels obey the spec."""

import csv
import json
from pathlib import Path

from sharelens.labels import MOTIVES, SPEC_VERSION
from training.corpus.annotation import agreement
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
    trainable = [r for r in final if splits[r["post_id"]] not in ("test", "ood_cctv", "ood_ced")]
    assert {s for r in trainable for s in [splits[r["post_id"]]]} <= {"train", "validation", "aux_cctv", "aux_ced",
                                                                        "aux_spam"}
    for motive in ("incentive", "help_seeking", "social_comparison"):  # hunted for in the visible sources
        assert sum(r["motive"] == motive for r in trainable) >= 100, motive
