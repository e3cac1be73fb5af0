"""The source manifest: where each raw file comes from and how to check it is the same file.

A source resolves to files either in a local mirror laid out as `<owner>__<repo>/<path in repo>`
(the layout of ../shared/data/raw) or, for users with a network, by downloading the pinned
commit's archive once into a cache. Either way the tree hash must match the manifest: a changed
file is an error, never a silent difference.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sharelens.errors import SharelensError
from sharelens.paths import REPO_ROOT, default_raw_dir  # noqa: F401 - re-exported
from sharelens.paths import SOURCES_MANIFEST as MANIFEST

ARCHIVE_URL = "https://codeload.github.com/{repo}/tar.gz/{commit}"


@dataclass(frozen=True)
class Source:
    id: str
    repo: str
    commit: str
    glob: str
    sha256: str
    files: int
    bytes: int
    licence: str
    parser: str
    domain: str

    @property
    def mirror_folder(self) -> str:
        return self.repo.replace("/", "__")


def load_manifest(path: Path = MANIFEST) -> list[Source]:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Source(**s) for s in doc["sources"]]


def tree_hash(paths: list[Path]) -> str:
    """sha256 over (file name, sha256 of content) of each file, in name order."""
    total = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        total.update(p.name.encode() + b"\0" + digest.encode() + b"\n")
    return total.hexdigest()



def resolve(source: Source, raw_dir: Path | None, cache_dir: Path, allow_fetch: bool = False) -> list[Path]:
    """The verified files of one source, from the mirror or (if allowed) the pinned archive."""
    paths: list[Path] = []
    if raw_dir is not None:
        paths = sorted((raw_dir / source.mirror_folder).glob(source.glob))
    if not paths:
        cached = cache_dir / source.mirror_folder
        paths = sorted(cached.glob(source.glob))
        if not paths:
            if not allow_fetch:
                raise SharelensError(
                    "E101",
                    f"source {source.id}: no files matching {source.glob!r} in the mirror "
                    f"({raw_dir or 'none set'}); set SHARELENS_RAW_DIR to a mirror or run "
                    "`make data FETCH=1` to download the pinned commit",
                )
            fetch(source, cached)
            paths = sorted(cached.glob(source.glob))
    if len(paths) != source.files:
        raise SharelensError(
            "E102", f"source {source.id}: expected {source.files} files for {source.glob!r}, found {len(paths)}"
        )
    got = tree_hash(paths)
    if got != source.sha256:
        raise SharelensError(
            "E103",
            f"source {source.id}: checksum mismatch (expected {source.sha256[:12]}…, got {got[:12]}…); "
            "the raw files differ from the pinned commit. Restore them or update data/sources.json on purpose",
        )
    return paths


def fetch(source: Source, dest: Path) -> None:
    """Download the pinned commit's archive and keep only the files the source needs."""
    import fnmatch

    url = ARCHIVE_URL.format(repo=source.repo, commit=source.commit)
    with urllib.request.urlopen(url, timeout=120) as resp:  # noqa: S310 - fixed https host
        blob = resp.read()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[-1]
            if member.isfile() and fnmatch.fnmatch(inner, source.glob):
                target = dest / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                f = tar.extractfile(member)
                assert f is not None
                target.write_bytes(f.read())
