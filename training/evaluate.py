"""`make eval`: the truth about a bundle, next to simple baselines, on held-out posts.

Default sets: the feed `test` split, plus the out-of-domain `ood_cctv` and `ood_ced` splits.
Any JSONL file in the spec's record format can be evaluated instead (`make eval DATA=path`).
Temperatures are fitted on the validation split and stored in the bundle's calibration.json,
which the API then uses: what is served is what is evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from sharelens.bundle import write_json
from sharelens.errors import SharelensError
from sharelens.labels import MOTIVE2ID, MOTIVES, TIERS, engagement, tier_of
from sharelens.modeling import tier_probs_from_logits
from sharelens.predictor import Predictor
from sharelens.registry import Registry
from sharelens.text import normalise_text
from training.baselines import fit_baselines
from training.data import TIER_TRAINED_DOMAINS, load_corpus
from training.metrics import ece, fit_temperature, motive_metrics, tier_metrics

DEFAULT_SETS = ("test", "ood_cctv", "ood_ced")


def read_records(path: Path) -> list[dict]:
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SharelensError("E310", f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(r, dict) or not isinstance(r.get("text"), str):
                raise SharelensError("E311", f"{path}:{n}: a record needs a string field 'text'")
            if r.get("motive") not in (None, *MOTIVES):
                raise SharelensError("E312", f"{path}:{n}: unknown motive {r.get('motive')!r}")
            if "tier" not in r and all(k in r for k in ("reposts", "comments", "likes")):
                r["tier"] = tier_of(engagement(r["reposts"], r["comments"], r["likes"]))
            rows.append(r)
    if not rows:
        raise SharelensError("E313", f"{path} holds no records")
    return rows


def _nll_motive(logits: np.ndarray, y: np.ndarray):
    lt = torch.from_numpy(logits)
    yt = torch.from_numpy(y)
    return lambda t: float(torch.nn.functional.cross_entropy(lt / t, yt))


def _nll_tier(logits: np.ndarray, y: np.ndarray):
    lt = torch.from_numpy(logits)
    return lambda t: float(-np.log(tier_probs_from_logits(lt, t).numpy()[np.arange(len(y)), y] + 1e-12).mean())


def fit_temperatures(pred: Predictor, corpus, split: str) -> dict:
    rows = corpus[split]
    texts = [r["text"] for r in rows]
    raw, _ = pred.logits(texts)
    doc: dict = {"fitted_on": split}
    m_idx = np.array([i for i, r in enumerate(rows) if r["motive"]], dtype=int)
    if len(m_idx):
        y = np.array([MOTIVE2ID[rows[int(i)]["motive"]] for i in m_idx])
        doc["motive_temperature"] = fit_temperature(_nll_motive(raw.motive_logits[m_idx], y))
        doc["motive_posts"] = int(len(m_idx))
    t_idx = np.array([i for i, r in enumerate(rows) if r["domain"] in TIER_TRAINED_DOMAINS], dtype=int)
    if len(t_idx):
        y = np.array([TIERS.index(rows[int(i)]["tier"]) for i in t_idx])
        doc["tier_temperature"] = fit_temperature(_nll_tier(raw.tier_logits[t_idx], y))
        doc["tier_posts"] = int(len(t_idx))
    return doc


def _score_head(y: np.ndarray, calibrated: np.ndarray, uncalibrated: np.ndarray, texts: list[str],
                baselines: dict, head: str, metrics_fn) -> dict:
    """Model and baselines on one head, plus ECE before and after temperature scaling."""
    res = {"model": metrics_fn(y, calibrated)}
    for name, b in baselines.items():
        res[name] = metrics_fn(y, b[head].predict_proba(texts))
    e0, bins0 = ece(y, uncalibrated)
    e1, bins1 = ece(y, calibrated)
    res["calibration"] = {"ece_before": e0, "ece_after": e1, "bins_before": bins0, "bins_after": bins1}
    return res


def evaluate_rows(pred: Predictor, rows: list[dict], baselines: dict) -> dict:
    texts = [normalise_text(r["text"]) for r in rows]
    raw, counts = pred.logits(texts)
    mp, tp = pred.probabilities(raw)
    out: dict = {"posts": len(rows), "truncated_posts": int(sum(c > pred.max_length for c in counts))}
    # uncalibrated probabilities for the before/after comparison
    m_raw = torch.softmax(torch.from_numpy(raw.motive_logits), -1).numpy()
    t_raw = tier_probs_from_logits(torch.from_numpy(raw.tier_logits)).numpy()
    m_idx = [i for i, r in enumerate(rows) if r.get("motive")]
    if m_idx:
        y = np.array([MOTIVE2ID[rows[i]["motive"]] for i in m_idx])
        out["motive"] = _score_head(y, mp[m_idx], m_raw[m_idx], [texts[i] for i in m_idx], baselines,
                                    "motive", motive_metrics)
    t_idx = [i for i, r in enumerate(rows) if r.get("tier")]
    if t_idx:
        y = np.array([TIERS.index(rows[i]["tier"]) for i in t_idx])
        out["tier"] = _score_head(y, tp[t_idx], t_raw[t_idx], [texts[i] for i in t_idx], baselines,
                                  "tier", tier_metrics)
    return out


def train_baselines(bundle: Path, corpus) -> dict:
    cfg = yaml.safe_load((bundle / "train_config.yaml").read_text(encoding="utf-8"))
    m_texts, m_y, t_texts, t_y = [], [], [], []
    for split in cfg["train_splits"]:
        for r in corpus[split]:
            if r["motive"]:
                m_texts.append(r["text"])
                m_y.append(MOTIVE2ID[r["motive"]])
            if r["domain"] in TIER_TRAINED_DOMAINS:
                t_texts.append(r["text"])
                t_y.append(TIERS.index(r["tier"]))
    if not m_texts:
        raise SharelensError("E314", "no motive-annotated training posts for the baselines; build the corpus "
                             "with the annotations (`make data`)")
    return fit_baselines(m_texts, np.array(m_y), t_texts, np.array(t_y))


def evaluate_bundle(bundle: Path, data: Path | None = None, fit_calibration: bool = False, registry: Registry | None = None,
                    data_dir: str = "data/build/corpus") -> dict:
    from training.report import write_report
    from training.train import resolve_path

    bundle = Path(bundle)
    pred = Predictor.from_bundle(bundle)
    corpus = load_corpus(resolve_path(data_dir))
    if fit_calibration:
        cfg = yaml.safe_load((bundle / "train_config.yaml").read_text(encoding="utf-8"))
        calib = fit_temperatures(pred, corpus, cfg.get("validation_split", "validation"))
        write_json(bundle / "calibration.json", {"motive_temperature": 1.0, "tier_temperature": 1.0, **calib})
        pred = Predictor.from_bundle(bundle)
    baselines = train_baselines(bundle, corpus)
    sets: dict[str, list[dict]] = {}
    if data is not None:
        sets[Path(data).stem] = read_records(Path(data))
    else:
        for name in DEFAULT_SETS:
            if name in corpus:
                sets[name] = list(corpus[name])
    results = {name: evaluate_rows(pred, rows, baselines) for name, rows in sets.items()}
    doc = {
        "bundle": str(bundle), "version": pred.version,
        "calibration": {k: v for k, v in pred.info.calibration.items()},
        "sets": results,
    }
    eval_dir = bundle / "eval"
    eval_dir.mkdir(exist_ok=True)
    tag = "" if data is None else f"-{Path(data).stem}"
    write_json(eval_dir / f"metrics{tag}.json", doc)
    report = write_report(doc, eval_dir, tag)
    print(summary_table(doc))
    print(f"Report: {report}")
    if registry is not None and data is None and "test" in results:
        t = results["test"]
        registry.update_summary(pred.info.name, pred.version, {
            "test_motive_macro_f1": t.get("motive", {}).get("model", {}).get("macro_f1"),
            "test_tier_qwk": t.get("tier", {}).get("model", {}).get("qwk"),
        })
    return doc


def summary_table(doc: dict) -> str:
    lines = [f"{'set':<10} {'head':<7} {'metric':<10} {'model':>7} {'tfidf':>7} {'majority':>9}"]
    for name, res in doc["sets"].items():
        for head, metric in (("motive", "macro_f1"), ("motive", "accuracy"), ("tier", "qwk"), ("tier", "macro_f1")):
            if head in res:
                r = res[head]
                lines.append(f"{name:<10} {head:<7} {metric:<10} {r['model'][metric]:>7.3f} "
                             f"{r['tfidf_logreg'][metric]:>7.3f} {r['majority'][metric]:>9.3f}")
    return "\n".join(lines)
