"""Word-level explanations, by one of three methods, folded onto words.

- `occlusion` (served by default): leave one jieba word out and re-score; a word's score is how
  much the output falls without it. Every variant of the post runs in one batched forward pass of
  the served network (int8 where that is served), no gradients. It measures exactly what an editor
  asks ("what if I cut this word?") and what the faithfulness test (AOPC) does.
- `integrated_gradients`: Integrated Gradients on the input embeddings (Gauss-Legendre steps); it
  satisfies completeness (token scores sum to F(x) - F(baseline)), so a score is a share of the
  model's own output. Forward and backward passes of the fp32 network per step.
- `gradient_x_input`: the gradient at the post times (embedding - baseline): one forward and
  backward pass; the cheapest, and the least faithful on our posts.
The choice of default and its measurement: `benchmarks/faithfulness.py` and `make bench`'s
explanation table.

Gradient methods: the baseline keeps the special tokens and turns
every other token into padding, so it is "the same post with its words removed".

Why IG: it satisfies completeness (token scores sum to F(x) - F(baseline)), so a score is a share
of the model's own output rather than a saliency heuristic, and it needs only gradients, which
every encoder transformers builds can give us. The baseline keeps the special tokens and turns
every other token into padding, so it is "the same post with its words removed".

Gradient scores live on subword tokens; editors read words. Tokens are mapped to characters of the
normalised text with the tokenizer's offset mapping (one code path for the XLM-R and the BERT
tokenizers), a token's score is split evenly over its non-space characters, and characters are
merged into words with jieba, keeping #话题#, [表情] and @mentions whole.

This module lives in `sharelens` so that serving (the API) and any offline benchmark explain
with exactly the same code.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sharelens.labels import MOTIVES

DEFAULT_STEPS = 16
# The explanation methods; the first is the served default (see the module docstring).
METHODS = ("occlusion", "integrated_gradients", "gradient_x_input")
DEFAULT_METHOD = METHODS[0]
# Interpolation steps run together in chunks of at most this many tokens (steps x post length), at
# least one step per chunk. It bounds the activations kept for the backward pass: on the served
# model (int8 backend, 2 threads), a 128-token post explained with all 16 steps at once peaked
# at 1,182 MiB of process memory in 4.5 s; in chunks of 4 steps, 751 MiB in 3.5 s; of 2 steps,
# 590 MiB in 3.5 s. Smaller matrices did not cost time here.
CHUNK_TOKENS = 256

# Spans that jieba would cut but that read as one unit on Weibo.
_WHOLE = re.compile(r"#[^#\n]{1,40}#|\[[^\[\]\s]{1,10}\]|@[\w\-]{1,30}")


@dataclass(frozen=True)
class Word:
    """A word of the normalised text: [start, end) in normalised characters, and its score."""

    start: int
    end: int
    text: str
    score: float


@dataclass(frozen=True)
class Attribution:
    """Scores for one prediction target over every word the model saw, in text order.

    `delta` is the completeness gap |sum of token scores - (F(x) - F(baseline))|: small means
    the integral was approximated well with the chosen number of steps."""

    target: str
    words: tuple[Word, ...]
    delta: float

    def top(self, k: int) -> list[Word]:
        """The k words with the largest |score|, largest first; ties keep text order."""
        ranked = sorted(self.words, key=lambda w: -abs(w.score))
        return ranked[:k]


@dataclass(frozen=True)
class Explanation:
    motive: Attribution
    tier: Attribution


def _gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights on [0, 1]: exact for polynomials of degree 2*steps-1, so few steps do."""
    x, w = np.polynomial.legendre.leggauss(steps)
    return torch.tensor((x + 1) / 2, dtype=torch.float32), torch.tensor(w / 2, dtype=torch.float32)


def expected_tier(tier_logits: torch.Tensor) -> torch.Tensor:
    """sum_k P(tier > k): the expected tier index under the ordinal head (0 = low .. 3 = viral)."""
    return torch.sigmoid(tier_logits).sum(-1)


def path_attributions(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      special_mask: torch.Tensor, pad_id: int, motive: int,
                      alphas: torch.Tensor, weights: torch.Tensor, context_ids: torch.Tensor | None = None
                      ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(x - b) * sum_i w_i grad F(b + a_i (x - b)) for one sequence (1, L) and both targets at once.

    With Gauss-Legendre nodes this is Integrated Gradients; with the one node a=1, w=1 it is
    gradient x input. Returns per-token scores for the motive logit and for the expected tier,
    and the two completeness gaps |sum of scores - (F(x) - F(b))|."""
    emb = model.encoder.get_input_embeddings()
    baseline_ids = torch.where(special_mask.bool(), input_ids, torch.full_like(input_ids, pad_id))
    with torch.no_grad():
        x = emb(input_ids)[0]
        b = emb(baseline_ids)[0]
    steps = int(alphas.shape[0])
    grad_m = torch.zeros_like(x)
    grad_t = torch.zeros_like(x)
    chunk = max(1, min(steps, CHUNK_TOKENS // max(1, input_ids.shape[-1])))
    for lo in range(0, steps, chunk):
        a = alphas[lo:lo + chunk].to(x.device)
        w = weights[lo:lo + chunk].to(x.device)
        n = a.shape[0]
        path = (b + a.view(-1, 1, 1) * (x - b)).detach().requires_grad_(True)
        with torch.enable_grad():
            out = model.heads(model.pool(input_ids.expand(n, -1), attention_mask.expand(n, -1),
                                         inputs_embeds=path),
                              None if context_ids is None else context_ids.expand(n, -1))
            fm = out.motive_logits[:, motive]
            ft = expected_tier(out.tier_logits)
            gm, = torch.autograd.grad(fm.sum(), path, retain_graph=True)
            gt, = torch.autograd.grad(ft.sum(), path)
        grad_m += (gm * w.view(-1, 1, 1)).sum(0)
        grad_t += (gt * w.view(-1, 1, 1)).sum(0)
    scores_m = ((x - b) * grad_m).sum(-1)
    scores_t = ((x - b) * grad_t).sum(-1)
    with torch.no_grad():
        ends = model.heads(model.pool(input_ids.expand(2, -1), attention_mask.expand(2, -1),
                                      inputs_embeds=torch.stack([x, b])),
                           None if context_ids is None else context_ids.expand(2, -1))
        dm = float(ends.motive_logits[0, motive] - ends.motive_logits[1, motive])
        et = expected_tier(ends.tier_logits)
        dt = float(et[0] - et[1])
    delta_m = abs(float(scores_m.sum()) - dm)
    delta_t = abs(float(scores_t.sum()) - dt)
    return scores_m.detach().cpu().numpy(), scores_t.detach().cpu().numpy(), delta_m, delta_t


def integrated_gradients(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         special_mask: torch.Tensor, pad_id: int, motive: int,
                         steps: int = DEFAULT_STEPS, context_ids: torch.Tensor | None = None
                         ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """IG for one sequence (1, L) and both targets at once (one forward, two backward passes a step)."""
    alphas, weights = _gauss_legendre(steps)
    return path_attributions(model, input_ids, attention_mask, special_mask, pad_id, motive, alphas, weights,
                             context_ids)


def gradient_x_input(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     special_mask: torch.Tensor, pad_id: int, motive: int,
                     context_ids: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The gradient at the post times its distance from the baseline: one forward and backward pass."""
    one = torch.ones(1, dtype=torch.float32)
    return path_attributions(model, input_ids, attention_mask, special_mask, pad_id, motive, one, one, context_ids)


def char_scores(text: str, token_scores: np.ndarray, offsets: list[tuple[int, int]],
                special: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Spread each token's score evenly over its non-space characters.

    Returns the per-character scores and a mask of characters some token covered (characters past
    the model window are not covered: they get no score rather than a fake zero)."""
    scores = np.zeros(len(text), dtype=np.float64)
    covered = np.zeros(len(text), dtype=bool)
    for s, (start, end), sp in zip(token_scores, offsets, special, strict=True):
        if sp or end <= start:
            continue
        idx = [i for i in range(start, min(end, len(text))) if not text[i].isspace()]
        if not idx:
            continue
        scores[idx] += float(s) / len(idx)
        covered[idx] = True
    return scores, covered


_JIEBA_LOCK = threading.Lock()
_JIEBA: list = []


def _jieba():
    """jieba with its dictionary loaded, once per process; concurrent first callers wait for it."""
    if not _JIEBA:
        with _JIEBA_LOCK:
            if not _JIEBA:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _JIEBA.append(jieba)
    return _JIEBA[0]


def is_punctuation(piece: str) -> bool:
    """Only punctuation and spaces (，。！ …): occlusion leaves these out. An editor acts on words,
    and on Weibo posts they are about a fifth of jieba's pieces, so of occlusion's forward batch."""
    return all(unicodedata.category(c)[0] in "PZ" or c.isspace() for c in piece)


def warm_up() -> None:
    """Load jieba's dictionary now (about half a second) rather than on the first request."""
    _jieba()


def segment(text: str) -> list[tuple[int, int]]:
    """[start, end) spans of the words of `text`, covering it; #话题#, [表情], @mentions whole."""
    cuts = {0, len(text)}
    pos = 0
    for piece in _jieba().lcut(text):
        pos += len(piece)
        cuts.add(pos)
    for m in _WHOLE.finditer(text):
        cuts -= set(range(m.start() + 1, m.end()))
        cuts |= {m.start(), m.end()}
    bounds = sorted(c for c in cuts if 0 <= c <= len(text))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def words_from_chars(text: str, scores: np.ndarray, covered: np.ndarray) -> tuple[Word, ...]:
    """Sum character scores onto words; whitespace and words the model never saw are left out."""
    words = []
    for start, end in segment(text):
        piece = text[start:end]
        if piece.isspace() or not covered[start:end].any():
            continue
        words.append(Word(start, end, piece, float(scores[start:end].sum())))
    return tuple(words)


# (texts) -> (motive logits (n, 10), tier logits (n, 3)) of already-normalised texts under one
# post's context: how occlusion re-scores the variants (the served network, batched).
Scorer = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]

# Occlusion scores at most this many spans: a post with more words is cut into this many runs of
# neighbouring words (2-3 words each on a long post), each left out as one. Its cost is one forward
# pass per span: on `make bench`'s posts, word by word gave p50 82 ms but p95 1,148 ms (feed posts
# of ~140 characters have ~50 words).
OCCLUSION_MAX_SPANS = 24

# Occlusion variants run in forward batches of at most this many texts (a 128-token window: 8,192
# tokens, the batcher's own cap on one model call).
OCCLUSION_BATCH = 64


def model_scorer(model, tokenizer, max_length: int, context_ids: torch.Tensor | None = None) -> Scorer:
    """A Scorer on a (differentiable) sharelens network, for callers without a Predictor."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def score(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ms, ts = [], []
        for lo in range(0, len(texts), OCCLUSION_BATCH):
            part = texts[lo:lo + OCCLUSION_BATCH]
            enc = tokenizer(part, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            ctx = None if context_ids is None else context_ids.reshape(1, -1).expand(len(part), -1)
            out = model.heads(model.pool(enc["input_ids"].to(device), enc["attention_mask"].to(device)), ctx)
            ms.append(out.motive_logits.float().cpu().numpy())
            ts.append(out.tier_logits.float().cpu().numpy())
        return np.concatenate(ms), np.concatenate(ts)

    return score


def predictor_scorer(predictor, context_ids=None) -> Scorer:
    """A Scorer on a `sharelens.predictor.Predictor`'s served network (fp32 or int8), with the
    post's context categories (1, slots) repeated for every variant."""

    def score(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ctx = None if context_ids is None else np.repeat(np.asarray(context_ids, dtype=np.int64).reshape(1, -1),
                                                         len(texts), axis=0)
        raw, _ = predictor.logits(texts, batch_size=OCCLUSION_BATCH, context_ids=ctx)
        return raw.motive_logits, raw.tier_logits

    return score


def _expected_tier_np(tier_logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-tier_logits.astype(np.float64)))).sum(-1)


def occlusion(text: str, spans: list[tuple[int, int]], motive: int, score: Scorer
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-word-out: the post and each variant without one span, scored in one batched call.

    Returns per-span scores (output with the post minus output without the span) for the motive
    logit and for the expected tier, and the two outputs of the whole post."""
    variants = [text] + [text[:a] + text[b:] for a, b in spans]
    m_logits, t_logits = score(variants)
    fm = m_logits[:, motive].astype(np.float64)
    ft = _expected_tier_np(t_logits)
    return fm[0] - fm[1:], ft[0] - ft[1:], fm[:1], ft[:1]


def group_spans(spans: list[tuple[int, int]], most: int) -> list[tuple[int, int]]:
    """At most `most` spans: runs of neighbouring spans, as even in count as possible, each from
    its first span's start to its last one's end (what lies between goes with it)."""
    if most <= 0 or len(spans) <= most:
        return spans
    cuts = np.array_split(np.arange(len(spans)), most)
    return [(spans[int(c[0])][0], spans[int(c[-1])][1]) for c in cuts]


def explain_text(model, tokenizer, text: str, max_length: int, motive: str | None = None,
                 steps: int = DEFAULT_STEPS, context_ids=None, method: str = "integrated_gradients",
                 scorer: Scorer | None = None, max_spans: int = OCCLUSION_MAX_SPANS) -> Explanation:
    """Explain one normalised text by `method` (one of METHODS). `motive` defaults to the model's
    top motive. `context_ids` (1, slots): the post's context categories, held fixed while the words
    are attributed. `scorer`: how occlusion re-scores its variants (default: `model`, fp32); the
    server passes its served network (`predictor_scorer`) so occlusion explains what it serves.
    `max_spans`: occlusion's most spans (0: every word alone), see OCCLUSION_MAX_SPANS."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; one of {', '.join(METHODS)}")
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_special_tokens_mask=True, return_tensors="pt")
    device = next(model.parameters()).device
    ids = enc["input_ids"].to(device)
    mask = enc["attention_mask"].to(device)
    special = enc["special_tokens_mask"].to(device)
    ctx = None if context_ids is None else torch.as_tensor(context_ids, dtype=torch.long, device=device).reshape(1, -1)
    offsets = [tuple(o) for o in enc["offset_mapping"][0].tolist()]
    flags = enc["special_tokens_mask"][0].tolist()
    if method == "occlusion":
        score = scorer if scorer is not None else model_scorer(model, tokenizer, max_length, ctx)
        _, covered = char_scores(text, np.zeros(len(offsets)), offsets, flags)
        spans = group_spans([(a, b) for a, b in segment(text)
                             if covered[a:b].any() and not is_punctuation(text[a:b])], max_spans)
        if motive is None:
            m_logits, _ = score([text])
            motive = MOTIVES[int(np.argmax(m_logits[0]))]
        sm, st, _, _ = occlusion(text, spans, MOTIVES.index(motive), score)
        nan = float("nan")  # completeness is a property of path methods, not of occlusion
        return Explanation(
            motive=Attribution(motive, tuple(Word(a, b, text[a:b], float(v)) for (a, b), v in zip(spans, sm, strict=True)), nan),
            tier=Attribution("expected_tier", tuple(Word(a, b, text[a:b], float(v)) for (a, b), v in zip(spans, st, strict=True)), nan),
        )
    if motive is None:
        with torch.no_grad():
            logits = model.heads(model.pool(ids, mask), ctx).motive_logits[0]
        motive = MOTIVES[int(logits.argmax())]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if method == "gradient_x_input":
        sm, st, dm, dt = gradient_x_input(model, ids, mask, special, pad_id, MOTIVES.index(motive), ctx)
    else:
        sm, st, dm, dt = integrated_gradients(model, ids, mask, special, pad_id, MOTIVES.index(motive), steps, ctx)
    cm, cov = char_scores(text, sm, offsets, flags)
    ct, _ = char_scores(text, st, offsets, flags)
    return Explanation(
        motive=Attribution(motive, words_from_chars(text, cm, cov), dm),
        tier=Attribution("expected_tier", words_from_chars(text, ct, cov), dt),
    )


@dataclass(frozen=True)
class ContextContribution:
    """How much one known context field moves the expected tier: the prediction with the field
    minus the prediction with it unknown (occlusion; the text's part held fixed)."""

    field: str
    value: str
    score: float


def _shown(value) -> str:
    from sharelens.post import AuthorHistory

    if isinstance(value, AuthorHistory):
        return f"{value.posts} posts, median {value.median_engagement:g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@torch.no_grad()
def context_contributions(model, features, tokenizer, text: str, context, max_length: int
                          ) -> list[ContextContribution]:
    """Each used context field's share of the expected tier, largest |score| first. Cheap: the
    text is encoded once and only the small tier head runs once per field."""
    if features is None or getattr(model, "context", None) is None:
        return []
    used, _, _ = features.usage(context)
    if not used:
        return []
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    pooled = model.pool(enc["input_ids"].to(device), enc["attention_mask"].to(device))
    variants = [context] + [context.without(f) for f in used]
    ids = torch.tensor([features.encode(c) for c in variants], dtype=torch.long, device=device)
    et = expected_tier(model.heads(pooled.expand(len(variants), -1), ids).tier_logits)
    out = [ContextContribution(f, _shown(getattr(context, f)), float(et[0] - et[i + 1])) for i, f in enumerate(used)]
    return sorted(out, key=lambda c: -abs(c.score))
