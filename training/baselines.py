"""Baselines every report shows beside the model: the majority class, and character n-gram
TF-IDF + logistic regression (scikit-learn), trained on exactly the model's training posts."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sharelens.labels import MOTIVES, TIERS


class Majority:
    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.cls = 0

    def fit(self, texts: list[str], y: np.ndarray) -> Majority:
        self.cls = int(np.bincount(y, minlength=self.n_classes).argmax())
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        p = np.zeros((len(texts), self.n_classes))
        p[:, self.cls] = 1.0
        return p


class TfidfLogReg:
    """Character 1-3-grams (Chinese has no spaces; characters and short runs carry the words)."""

    def __init__(self, n_classes: int, seed: int = 0) -> None:
        self.n_classes = n_classes
        self.pipe = make_pipeline(
            TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True, max_features=200_000),
            LogisticRegression(max_iter=2000, C=4.0, class_weight="balanced", random_state=seed),
        )

    def fit(self, texts: list[str], y: np.ndarray) -> TfidfLogReg:
        self.pipe.fit(texts, y)
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        p = self.pipe.predict_proba(texts)
        out = np.zeros((len(texts), self.n_classes))
        out[:, self.pipe.classes_] = p  # classes unseen in training keep probability 0
        return out


def fit_baselines(motive_texts: list[str], motive_y: np.ndarray, tier_texts: list[str],
                  tier_y: np.ndarray) -> dict[str, dict[str, object]]:
    return {
        "majority": {"motive": Majority(len(MOTIVES)).fit(motive_texts, motive_y),
                     "tier": Majority(len(TIERS)).fit(tier_texts, tier_y)},
        "tfidf_logreg": {"motive": TfidfLogReg(len(MOTIVES)).fit(motive_texts, motive_y),
                         "tier": TfidfLogReg(len(TIERS)).fit(tier_texts, tier_y)},
    }
