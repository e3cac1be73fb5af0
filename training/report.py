"""report.md and PNG plots (confusion matrices, reliability diagrams) from an evaluation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sharelens.labels import MOTIVES, TIERS  # noqa: E402


def _confusion_png(matrix: list[list[int]], labels: tuple[str, ...], title: str, path: Path) -> None:
    m = np.array(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(labels), 0.8 + 0.5 * len(labels)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reliability_png(calib: dict, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for key, label in (("bins_before", f"before (ECE {calib['ece_before']:.3f})"),
                       ("bins_after", f"after T (ECE {calib['ece_after']:.3f})")):
        bins = calib[key]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label=label)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(doc: dict, out_dir: Path, tag: str = "") -> Path:
    lines = [f"# Evaluation of {doc['version']}", "",
             f"Calibration: motive T = {doc['calibration'].get('motive_temperature'):.3g} (fitted on "
             f"{doc['calibration'].get('fitted_on', 'validation')}), tier T = "
             f"{doc['calibration'].get('tier_temperature'):.3g} (fitted on "
             f"{doc['calibration'].get('tier_fitted_on') or doc['calibration'].get('fitted_on', 'validation')})", ""]
    for name, res in doc["sets"].items():
        lines += [f"## {name} ({res['posts']} posts, {res['truncated_posts']} truncated)", ""]
        if "motive" in res:
            m = res["motive"]
            lines += [f"### Share motive ({m['model']['n']} annotated posts)", "",
                      "| | accuracy | macro-F1 | top-2 acc |", "|---|---|---|---|"]
            for who in ("model", "tfidf_logreg", "majority"):
                if who in m:
                    r = m[who]
                    lines.append(f"| {who} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['top2_accuracy']:.3f} |")
            lines += ["", "| motive | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            for mot, r in m["model"]["per_motive"].items():
                lines.append(f"| {mot} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | {r['support']} |")
            lines += ["", f"ECE before scaling {m['calibration']['ece_before']:.3f}, after "
                      f"{m['calibration']['ece_after']:.3f}", ""]
            errors = m.get("confident_errors", {})
            if any(errors.values()):
                lines += ["Most confident errors per true motive (post id → predicted, confidence):", ""]
                for mot, rows in errors.items():
                    if rows:
                        lines.append(f"- {mot}: " + ", ".join(
                            f"`{r['post_id']}` → {r['predicted']} {r['confidence']:.2f}" for r in rows))
                lines.append("")
            _confusion_png(m["model"]["confusion"], MOTIVES, f"{name}: motive", out_dir / f"confusion-motive-{name}{tag}.png")
            _reliability_png(m["calibration"], f"{name}: motive", out_dir / f"reliability-motive-{name}{tag}.png")
            lines += [f"![](confusion-motive-{name}{tag}.png) ![](reliability-motive-{name}{tag}.png)", ""]
        if "tier" in res:
            from training.evaluate import tier_rows

            t = res["tier"]
            cov = res.get("context_coverage", {})
            ages = t.get("observed_age_days")
            lines += [f"### Engagement tier ({t['model']['n']} posts)", "",
                      "Context fields carried by the posts of this set: " + (", ".join(
                          f"{k} {v}" for k, v in cov.items()) or "none") + "." + (
                          f" Age when the counts were snapshotted (days): median {ages['p50']:.1f}, "
                          f"5-95% {ages['p5']:.1f}-{ages['p95']:.1f} ({ages['n']} posts)." if ages else ""), "",
                      "| | accuracy | macro-F1 | QWK | MAE (tiers) |", "|---|---|---|---|---|"]
            for who in tier_rows(t):
                r = t[who]
                lines.append(f"| {who} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['qwk']:.3f} | {r['mae']:.3f} |")
            lines += ["", "`model` reads the text and every context field the post carries (as the API does); "
                      "`+ observed age` also the post's age at the snapshot; `without X` drops one field; "
                      "`context_logreg` is logistic regression on the context alone, `tfidf_context_logreg` on "
                      "TF-IDF + context."]
            if "argmax" in t["model"]:
                lines += ["", "Tiers are decided by the median of each predicted distribution (every model alike); "
                          "by the most probable tier instead: " + ", ".join(
                              f"{who} QWK {t[who]['argmax']['qwk']:.3f} / macro-F1 {t[who]['argmax']['macro_f1']:.3f}"
                              for who in ("model", "tfidf_logreg") if "argmax" in t[who]) + "."]
            lines += ["", f"ECE before scaling {t['calibration']['ece_before']:.3f}, after "
                      f"{t['calibration']['ece_after']:.3f}", ""]
            _confusion_png(t["model"]["confusion"], TIERS, f"{name}: tier", out_dir / f"confusion-tier-{name}{tag}.png")
            _reliability_png(t["calibration"], f"{name}: tier", out_dir / f"reliability-tier-{name}{tag}.png")
            lines += [f"![](confusion-tier-{name}{tag}.png) ![](reliability-tier-{name}{tag}.png)", ""]
    path = out_dir / f"report{tag}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
