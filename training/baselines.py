"""Baselines every report shows beside the model, trained on exactly the model's training posts:
the majority class; character n-gram TF-IDF + logistic regression on the text; and, for the
engagement tier, logistic regression on the context features alone and on TF-IDF + context.

Every baseline takes `Post`s, like the model. The context baselines see the context through the
bundle's own encoder (`sharelens.context_features`: the same categories, "unknown" included), one-hot
encoded; they never see the observed age (neither does the model's headline row).

Why logistic regression for the context-only model rather than histogram gradient boosting: on the
validation split (feed, channel + vip + weekday + has_link, tiers by argmax) LR reached QWK 0.333 and
HGB 0.171 (max_depth 4, 200 iterations): with ~50 channels of ~50 posts each, boosting overfits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from sharelens.context_features import ContextFeatures
from sharelens.labels import MOTIVES, TIERS
from sharelens.post import Post


def _texts(posts: Sequence[Post]) -> list[str]:
    return [p.text for p in posts]


def _spread(p: np.ndarray, classes: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((p.shape[0], n))
    out[:, classes] = p  # classes unseen in training keep probability 0
    return out


class Majority:
    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.cls = 0

    def fit(self, posts: Sequence[Post], y: np.ndarray) -> Majority:
        self.cls = int(np.bincount(y, minlength=self.n_classes).argmax())
        return self

    def predict_proba(self, posts: Sequence[Post]) -> np.ndarray:
        p = np.zeros((len(posts), self.n_classes))
        p[:, self.cls] = 1.0
        return p


def _tfidf() -> TfidfVectorizer:
    """Character 1-3-grams (Chinese has no spaces; characters and short runs carry the words)."""
    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True, max_features=200_000)


def _logreg(seed: int) -> LogisticRegression:
    return LogisticRegression(max_iter=2000, C=4.0, class_weight="balanced", random_state=seed)


class TfidfLogReg:
    def __init__(self, n_classes: int, seed: int = 0) -> None:
        self.n_classes = n_classes
        self.pipe = make_pipeline(_tfidf(), _logreg(seed))

    def fit(self, posts: Sequence[Post], y: np.ndarray) -> TfidfLogReg:
        self.pipe.fit(_texts(posts), y)
        return self

    def predict_proba(self, posts: Sequence[Post]) -> np.ndarray:
        return _spread(self.pipe.predict_proba(_texts(posts)), self.pipe.classes_, self.n_classes)


class ContextLogReg:
    """Logistic regression on the one-hot context categories, optionally beside TF-IDF of the text."""

    def __init__(self, n_classes: int, features: ContextFeatures, with_text: bool = False, seed: int = 0) -> None:
        self.n_classes = n_classes
        self.features = features
        self.with_text = with_text
        self.onehot = OneHotEncoder(handle_unknown="ignore")
        self.tfidf = _tfidf() if with_text else None
        self.lr = LogisticRegression(max_iter=3000, C=1.0, class_weight="balanced", random_state=seed)

    def _matrix(self, posts: Sequence[Post], fit: bool):
        cats = np.array(self.features.encode_posts(posts), dtype=np.int64).reshape(len(posts), -1)
        x = self.onehot.fit_transform(cats) if fit else self.onehot.transform(cats)
        if self.tfidf is not None:
            t = self.tfidf.fit_transform(_texts(posts)) if fit else self.tfidf.transform(_texts(posts))
            x = sparse.hstack([x, t]).tocsr()
        return x

    def fit(self, posts: Sequence[Post], y: np.ndarray) -> ContextLogReg:
        self.lr.fit(self._matrix(posts, fit=True), y)
        return self

    def predict_proba(self, posts: Sequence[Post]) -> np.ndarray:
        return _spread(self.lr.predict_proba(self._matrix(posts, fit=False)), self.lr.classes_, self.n_classes)


MOTIVE_BASELINES = ("tfidf_logreg", "majority")
TIER_BASELINES = ("tfidf_logreg", "context_logreg", "tfidf_context_logreg", "majority")


def fit_baselines(motive_posts: Sequence[Post], motive_y: np.ndarray, tier_posts: Sequence[Post],
                  tier_y: np.ndarray, features: ContextFeatures | None = None) -> dict[str, dict[str, object]]:
    """name -> {"motive": model, "tier": model}; the context baselines only where features exist."""
    out: dict[str, dict[str, object]] = {
        "majority": {"motive": Majority(len(MOTIVES)).fit(motive_posts, motive_y),
                     "tier": Majority(len(TIERS)).fit(tier_posts, tier_y)},
        "tfidf_logreg": {"motive": TfidfLogReg(len(MOTIVES)).fit(motive_posts, motive_y),
                         "tier": TfidfLogReg(len(TIERS)).fit(tier_posts, tier_y)},
    }
    if features is not None:
        out["context_logreg"] = {"tier": ContextLogReg(len(TIERS), features).fit(tier_posts, tier_y)}
        out["tfidf_context_logreg"] = {
            "tier": ContextLogReg(len(TIERS), features, with_text=True).fit(tier_posts, tier_y)}
    return out
