"""Exact and near-duplicate detection over normalised texts.

Near duplicates (the same hot post re-crawled with a different counter suffix, a repost that
adds a few characters) are found with MinHash over character 4-grams and LSH banding, then
confirmed with the exact Jaccard similarity of the two shingle sets.
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


def _shingles(key: str, k: int = 4) -> set[int]:
    if len(key) <= k:
        return {int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")}
    return {
        int.from_bytes(hashlib.blake2b(key[i : i + k].encode(), digest_size=8).digest(), "little")
        for i in range(len(key) - k + 1)
    }


def near_duplicate_groups(keys: list[str], threshold: float = 0.8, min_len: int = 12) -> list[list[int]]:
    """Groups of indices whose keys have Jaccard similarity >= threshold (transitively joined).

    Keys shorter than `min_len` are only matched exactly: short posts ("转发微博", an emoji)
    share most 4-grams by chance and are left to the exact pass.
    """
    rng = np.random.default_rng(0)
    a = rng.integers(1, _PRIME, NUM_PERM, dtype=np.uint64)[:, None]
    b = rng.integers(0, _PRIME, NUM_PERM, dtype=np.uint64)[:, None]
    shingles: dict[int, set[int]] = {}
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    rows = NUM_PERM // BANDS
    for i, key in enumerate(keys):
        if len(key) < min_len:
            continue
        sh = _shingles(key)
        shingles[i] = sh
        arr = (np.fromiter(sh, dtype=np.uint64) & np.uint64(_PRIME))[None, :]
        sig = ((a * arr + b) % np.uint64(_PRIME)).min(axis=1).tolist()
        for band in range(BANDS):
            chunk = sig[band * rows : (band + 1) * rows]
            buckets[(band, hashlib.blake2b(repr(chunk).encode(), digest_size=8).digest())].append(i)

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
            s1, s2 = shingles[members[0]], shingles[j]
            if len(s1 & s2) / len(s1 | s2) >= threshold:
                parent[find(j)] = find(members[0])
    groups: dict[int, list[int]] = defaultdict(list)
    for i in shingles:
        groups[find(i)].append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]
