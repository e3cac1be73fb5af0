"""`make eval`: the truth about a bundle, next to simple baselines, on held-out posts.

Default sets: the feed `test` split and the ordinary accounts' `ordinary_test`, plus the
out-of-domain `ood_cctv` and `ood_ced` splits. Any JSONL file in the spec's record format (with or
without context fields) can be evaluated instead (`make eval DATA=path`).

The tier table has one row per way of feeding the model (`TIER_VARIANTS`): the post with its full
context (the headline: what a caller who knows the context gets), the same plus the age at which
its counts were snapshotted (right-censoring: the label is what a post of that age had collected),
text only, and each context field removed; beside the baselines (majority, TF-IDF on the text,
logistic regression on the context alone and on TF-IDF + context).
Temperatures are stored in the bundle's calibration.json, which the API then uses: what is served is
what is evaluated. The motive's is fitted on the validation split; the tier's on the later half of the
tier head's forward check (training/tier_refit.py), since the shipped tier head trains on validation.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml

from sharelens.bundle import write_json
from sharelens.context_features import ContextFeatures, observed_age_days
from sharelens.errors import SharelensError
from sharelens.labels import MOTIVE2ID, MOTIVES, TIERS, engagement, tier_of
from sharelens.modeling import tier_probs_from_logits
from sharelens.paths import resolve_path
from sharelens.post import Context, Post
from sharelens.predictor import Predictor
from sharelens.registry import Registry
from sharelens.text import normalise_text
from training.baselines import MOTIVE_BASELINES, TIER_BASELINES, fit_baselines
from training.data import TIER_TRAINED_DOMAINS, load_corpus
from training.metrics import ece, fit_temperature, motive_metrics, motive_nll, tier_metrics, tier_nll

DEFAULT_SETS = ("test", "ordinary_test", "ood_cctv", "ood_ced")
# tier rows: name -> (context fields removed, use the observed age)
TIER_VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "model": ((), False),
    "model + observed age": ((), True),
    "model, text only": (Context.field_names(), False),
    **{f"model without {f}": ((f,), False) for f in Context.field_names()},
}


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
            try:
                Context.from_record(r)
            except SharelensError as exc:
                raise SharelensError("E315", f"{path}:{n}: {exc.message}") from exc
            if "tier" not in r and all(k in r for k in ("reposts", "comments", "likes")):
                r["tier"] = tier_of(engagement(r["reposts"], r["comments"], r["likes"]))
            rows.append(r)
    if not rows:
        raise SharelensError("E313", f"{path} holds no records")
    return rows


def posts_of(rows) -> list[Post]:
    return [Post.from_record(r) for r in rows]


def fit_temperatures(pred: Predictor, corpus, split: str) -> dict:
    """Temperatures on the validation split, fed as the API is fed: full context, no observed age."""
    rows = list(corpus[split])
    posts = posts_of(rows)
    raw, _ = pred.logits([normalise_text(p.text) for p in posts], context_ids=pred.context_ids(posts),
                         progress=f"calibrate on {split}")
    doc: dict = {"fitted_on": split}
    m_idx = np.array([i for i, r in enumerate(rows) if r["motive"]], dtype=int)
    if len(m_idx):
        y = np.array([MOTIVE2ID[rows[int(i)]["motive"]] for i in m_idx])
        doc["motive_temperature"] = fit_temperature(motive_nll(raw.motive_logits[m_idx], y))
        doc["motive_posts"] = int(len(m_idx))
    t_idx = np.array([i for i, r in enumerate(rows) if r["domain"] in TIER_TRAINED_DOMAINS], dtype=int)
    if len(t_idx):
        y = np.array([TIERS.index(rows[int(i)]["tier"]) for i in t_idx])
        doc["tier_temperature"] = fit_temperature(tier_nll(raw.tier_logits[t_idx], y))
        doc["tier_posts"] = int(len(t_idx))
    return doc


def _calibration(y: np.ndarray, calibrated: np.ndarray, uncalibrated: np.ndarray) -> dict:
    e0, bins0 = ece(y, uncalibrated)
    e1, bins1 = ece(y, calibrated)
    return {"ece_before": e0, "ece_after": e1, "bins_before": bins0, "bins_after": bins1}


def _context_coverage(posts: list[Post]) -> dict[str, int]:
    """How many posts of a set carry each context field."""
    return {f: sum(getattr(p.context, f) is not None for p in posts) for f in Context.field_names()}


def _tier_variants(pred: Predictor, pooled: np.ndarray, posts: list[Post], ages: list[float | None]) -> dict:
    """Calibrated tier distributions for every row of the tier table that this set can inform:
    a field no post carries has no "without" row (it would equal the full row). `pooled`: the
    posts' encoded texts; only the heads run once per variant."""
    coverage = _context_coverage(posts)
    out: dict[str, np.ndarray] = {}
    for name, (removed, with_age) in TIER_VARIANTS.items():
        if pred.features is None and name != "model":
            continue
        if with_age and not any(a is not None for a in ages):
            continue
        if len(removed) == 1 and not coverage[removed[0]]:
            continue
        variant = [Post(p.text, p.context.without(*removed)) for p in posts]
        ids = pred.context_ids(variant, ages if with_age else None)
        out[name] = pred.probabilities(pred.head_logits(pooled, ids))[1]
    return out


def evaluate_rows(pred: Predictor, rows: list[dict], baselines: dict) -> dict:
    posts = posts_of(rows)
    texts = [normalise_text(p.text) for p in posts]
    pooled = pred.pooled(texts, progress="encode")  # each text is encoded once for every row of both tables
    raw = pred.head_logits(pooled, pred.context_ids(posts))
    counts = pred.tokenize(texts)[1] if texts else []
    mp, tp = pred.probabilities(raw)
    out: dict = {"posts": len(rows), "truncated_posts": int(sum(c > pred.max_length for c in counts)),
                 "domains": dict(sorted(Counter(str(r.get("domain", "")) for r in rows).items())),
                 "context_coverage": _context_coverage(posts)}
    # uncalibrated probabilities for the before/after comparison
    m_raw = torch.softmax(torch.from_numpy(raw.motive_logits), -1).numpy()
    t_raw = tier_probs_from_logits(torch.from_numpy(raw.tier_logits)).numpy()
    m_idx = [i for i, r in enumerate(rows) if r.get("motive")]
    if m_idx:
        y = np.array([MOTIVE2ID[rows[i]["motive"]] for i in m_idx])
        sub = [posts[i] for i in m_idx]
        res = {"model": motive_metrics(y, mp[m_idx])}
        for name in MOTIVE_BASELINES:
            if name in baselines and "motive" in baselines[name]:
                res[name] = motive_metrics(y, baselines[name]["motive"].predict_proba(sub))
        res["calibration"] = _calibration(y, mp[m_idx], m_raw[m_idx])
        res["confident_errors"] = confident_errors([str(rows[i].get("post_id", i)) for i in m_idx], y, mp[m_idx])
        out["motive"] = res
    t_idx = [i for i, r in enumerate(rows) if r.get("tier")]
    if t_idx:
        y = np.array([TIERS.index(rows[i]["tier"]) for i in t_idx])
        sub = [posts[i] for i in t_idx]
        ages = [observed_age_days(rows[i].get("posted_at"), rows[i].get("observed_at")) for i in t_idx]
        variants = _tier_variants(pred, pooled[t_idx], sub, ages)
        res = {name: tier_metrics(y, p) for name, p in variants.items()}
        for name in TIER_BASELINES:
            if name in baselines and "tier" in baselines[name]:
                res[name] = tier_metrics(y, baselines[name]["tier"].predict_proba(sub))
        res["calibration"] = _calibration(y, tp[t_idx], t_raw[t_idx])
        res["observed_age_days"] = _quantiles([a for a in ages if a is not None])
        out["tier"] = res
    return out


def confident_errors(ids: list[str], y: np.ndarray, probs: np.ndarray, k: int = 10) -> dict[str, list[dict]]:
    """Per true motive, the k wrong predictions the model was surest of (post id, what it said, how
    sure): where to read to see what the model confuses."""
    pred = probs.argmax(1)
    out: dict[str, list[dict]] = {}
    for m, name in enumerate(MOTIVES):
        wrong = np.flatnonzero((y == m) & (pred != m))
        wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:k]
        out[name] = [{"post_id": ids[i], "predicted": MOTIVES[int(pred[i])],
                      "confidence": round(float(probs[i, pred[i]]), 4)} for i in wrong]
    return out


def _quantiles(values: list[float]) -> dict | None:
    if not values:
        return None
    q = np.percentile(values, [5, 25, 50, 75, 95])
    return {"n": len(values), **{f"p{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), q, strict=True)}}


def train_baselines(bundle: Path, corpus, features: ContextFeatures | None = None) -> dict:
    """The baselines, each trained on exactly the posts the model's head of the same task learned from:
    the motive ones on the training splits, the tier ones also on the recent splits when the bundle's
    tier head was refit with them (training/tier_refit.py)."""
    cfg = yaml.safe_load((bundle / "train_config.yaml").read_text(encoding="utf-8"))
    meta = json.loads((bundle / "bundle.json").read_text(encoding="utf-8")) if (bundle / "bundle.json").is_file() else {}
    tier_splits = (meta.get("tier_refit") or {}).get("train_splits") or cfg["train_splits"]
    m_posts, m_y, t_posts, t_y = [], [], [], []
    for split in cfg["train_splits"]:
        if split in corpus:
            for r in corpus[split]:
                if r["motive"]:
                    m_posts.append(Post.from_record(r))
                    m_y.append(MOTIVE2ID[r["motive"]])
    for split in tier_splits:
        if split in corpus:
            for r in corpus[split]:
                if r["domain"] in TIER_TRAINED_DOMAINS:
                    t_posts.append(Post.from_record(r))
                    t_y.append(TIERS.index(r["tier"]))
    if not m_posts:
        raise SharelensError("E314", "no motive-annotated training posts for the baselines; build the corpus "
                             "with the annotations (`make data`)")
    return fit_baselines(m_posts, np.array(m_y), t_posts, np.array(t_y), features)


def evaluate_bundle(bundle: Path, data: Path | None = None, fit_calibration: bool = False, registry: Registry | None = None,
                    data_dir: str = "data/build/corpus") -> dict:
    from training.report import write_report

    bundle = Path(bundle)
    pred = Predictor.from_bundle(bundle)
    corpus = load_corpus(resolve_path(data_dir))
    if fit_calibration:
        cfg = yaml.safe_load((bundle / "train_config.yaml").read_text(encoding="utf-8"))
        calib = fit_temperatures(pred, corpus, cfg.get("validation_split", "validation"))
        refit = pred.info.meta.get("tier_refit") or {}
        if refit.get("recent_splits"):
            # the tier head was trained on the validation split too: its temperature comes from the
            # forward check, fitted on later posts that check's head never saw (training/tier_refit.py);
            # with no later posts there is nothing held out to fit it on, and it stays at 1
            held_out = refit.get("temperature") is not None
            calib["tier_temperature"] = float(refit["temperature"]) if held_out else 1.0
            calib["tier_posts"] = int(refit.get("forward", {}).get("holdout_posts", 0))
            calib["tier_fitted_on"] = ("forward check: the later half of " + ", ".join(refit["recent_splits"])
                                       if held_out else "none (the forward check had no later posts)")
        write_json(bundle / "calibration.json", {"motive_temperature": 1.0, "tier_temperature": 1.0, **calib})
        pred = Predictor.from_bundle(bundle)
    baselines = train_baselines(bundle, corpus, pred.features)
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
    if data is None:  # the card states the held-out figures, not those of an ad-hoc file
        from training.model_card import write_model_card

        write_model_card(bundle)
    print(summary_table(doc))
    print(f"Report: {report}")
    if registry is not None and data is None and "test" in results:
        t = results["test"]
        registry.update_summary(pred.info.name, pred.version, {
            "test_motive_macro_f1": t.get("motive", {}).get("model", {}).get("macro_f1"),
            "test_tier_qwk": t.get("tier", {}).get("model", {}).get("qwk"),
        })
    return doc


def tier_rows(res: dict) -> list[str]:
    """The names of the tier table's rows present in one set's results, in table order."""
    return [n for n in (*TIER_VARIANTS, *TIER_BASELINES) if n in res]


def summary_table(doc: dict) -> str:
    lines = []
    for name, res in doc["sets"].items():
        domains = ", ".join(f"{d} {n}" for d, n in res.get("domains", {}).items())
        lines.append(f"== {name}: {res['posts']} posts ({domains})")
        if "motive" in res:
            m = res["motive"]
            lines.append(f"   motive ({m['model']['n']} annotated)   macro-F1   accuracy   top-2")
            for who in ("model", *MOTIVE_BASELINES):
                if who in m:
                    r = m[who]
                    lines.append(f"   {who:<24} {r['macro_f1']:>8.3f} {r['accuracy']:>10.3f} {r['top2_accuracy']:>7.3f}")
        if "tier" in res:
            t = res["tier"]
            lines.append(f"   tier ({t['model']['n']} posts)            QWK   macro-F1")
            for who in tier_rows(t):
                lines.append(f"   {who:<28} {t[who]['qwk']:>6.3f} {t[who]['macro_f1']:>9.3f}")
    return "\n".join(lines)
