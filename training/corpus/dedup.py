"""Exact and near-duplicate detection over normalised texts.

Near duplicates (the same hot post re-crawled with a different counter suffix, a repost that
adds a few characters) are found with MinHash over character 4-grams and LSH banding, then
confirmed with the exact Jaccard similarity of the two shingle sets.

Shingle sets are kept as sorted numpy arrays (8 bytes a shingle, not a Python set): the corpus
holds ~90k posts once the spam crawl is in. `ShingleCache` lets the build compute each text's
shingles and signature once although it runs the detector once per priority pass.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import numpy as np

_STRIP = re.compile(r"[\s\u3000，。！？、；：“”‘’（）()【】\[\]#@.,!?;:'\"~～…—-]+")
NUM_PERM = 64
BANDS = 16  # 16 bands x 4 rows: pairs at Jaccard 0.8 collide with probability > 0.99
_PRIME = (1 << 31) - 1  # products of two 31-bit numbers stay inside uint64


def dedup_key(text: str) -> str:
    """What is compared: the text without punctuation and spaces."""
    return _STRIP.sub("", text)


def _hash(gram: str) -> int:
    return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")


def _shingles(key: str, k: int = 4) -> np.ndarray:
    """The sorted, unique 64-bit hashes (blake2b of the UTF-8 bytes) of the key's character k-grams."""
    if len(key) <= k:
        return np.array([_hash(key)], dtype=np.uint64)
    raw = key.encode()
    # byte offset of every character, so that each k-gram is a slice of one encoded buffer
    cps = np.frombuffer(key.encode("utf-32-le"), dtype=np.uint32)
    widths = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
    offs = np.concatenate(([0], np.cumsum(widths))).tolist()
    blake = hashlib.blake2b
    digests = b"".join([blake(raw[offs[i] : offs[i + k]], digest_size=8).digest() for i in range(len(key) - k + 1)])
    return np.unique(np.frombuffer(digests, dtype="<u8"))


def _permutations() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(1, _PRIME, NUM_PERM, dtype=np.uint64)[:, None]
    b = rng.integers(0, _PRIME, NUM_PERM, dtype=np.uint64)[:, None]
    return a, b


class ShingleCache:
    """key -> (shingles, band keys); the same key is hashed once per build."""

    def __init__(self) -> None:
        self._a, self._b = _permutations()
        self._store: dict[str, tuple[np.ndarray, list[bytes]]] = {}

    def get(self, key: str) -> tuple[np.ndarray, list[bytes]]:
        hit = self._store.get(key)
        if hit is None:
            sh = _shingles(key)
            arr = (sh & np.uint64(_PRIME))[None, :]
            sig = ((self._a * arr + self._b) % np.uint64(_PRIME)).min(axis=1).astype("<u8").tobytes()
            width = 8 * NUM_PERM // BANDS  # one band: its rows' minima, as bytes (the bucket key)
            hit = (sh, [sig[band * width : (band + 1) * width] for band in range(BANDS)])
            self._store[key] = hit
        return hit


def _jaccard(s1: np.ndarray, s2: np.ndarray) -> float:
    inter = np.intersect1d(s1, s2, assume_unique=True).size
    return inter / (s1.size + s2.size - inter)


def near_duplicate_groups(
    keys: list[str], threshold: float = 0.8, min_len: int = 12, cache: ShingleCache | None = None
) -> list[list[int]]:
    """Groups of indices whose keys have Jaccard similarity >= threshold (transitively joined).

    Keys shorter than `min_len` are only matched exactly: short posts ("转发微博", an emoji)
    share most 4-grams by chance and are left to the exact pass.
    """
    cache = cache if cache is not None else ShingleCache()
    shingles: dict[int, np.ndarray] = {}
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if len(key) < min_len:
            continue
        sh, bands = cache.get(key)
        shingles[i] = sh
        for band, digest in enumerate(bands):
            buckets[(band, digest)].append(i)

    parent = list(range(len(keys)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    checked: set[tuple[int, int]] = set()
    for members in buckets.values():
        if len(members) < 2:
            continue
        for j in members[1:]:
            pair = (members[0], j)
            if pair in checked:
                continue
            checked.add(pair)
            if _jaccard(shingles[members[0]], shingles[j]) >= threshold:
                parent[find(j)] = find(members[0])
    groups: dict[int, list[int]] = defaultdict(list)
    for i in shingles:
        groups[find(i)].append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]
