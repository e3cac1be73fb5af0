"""Text normalisation shared by corpus building, training and serving.

What is noise for the model goes (zero-width characters, runs of whitespace, t.cn short links,
the feed's "...展开全文" truncation marker); what is signal stays untouched (emoji codes such
as [微笑], #话题#, @mentions). Link and truncation are returned as flags so the corpus keeps the
fact without feeding the model a URL.

No Unicode NFKC here on purpose: the XLM-R tokenizer normalises width itself, and keeping
characters as they are lets `Normalised.offsets` map every character back to the raw text,
which the explanations need to highlight words in what the editor typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ZERO_WIDTH = "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"
_SPACE = " \t\u00a0\u3000\r\n\u2028\u2029"
_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_MARKER = "展开全文"

URL_TOKEN = "[链接]"


@dataclass(frozen=True)
class Normalised:
    text: str
    has_link: bool
    truncated: bool
    # offsets[i] is the index in the raw text of normalised character i.
    offsets: tuple[int, ...] = field(repr=False, default=())

    def raw_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a [start, end) span of the normalised text to the raw text."""
        if start >= end:
            raise ValueError("empty span")
        return self.offsets[start], self.offsets[end - 1] + 1


def truncation_start(text: str) -> int | None:
    r"""Where the feed's truncation marker starts, or None: a run of two or more dots or of
    ellipses, optional whitespace, 展开全文, optional whitespace, an optional "c", optional
    whitespace, at the very end of `text` (what `(?:\.{2,}|…+)\s*展开全文\s*c?\s*$` found).

    Read backwards from the end with `rstrip`/`endswith`: linear, and it looks only at the marker
    and the run of dots before it, never at the rest of the text. The regex was searched forwards:
    on a run of dots without a marker it tried every dot as a start and ran each one to the end of
    the run, quadratic in the run's length, twice per text, holding the GIL. Measured on this
    machine (2 cores, shared with a training run), 2,000 dots and no marker, best of 5:
      before  .venv/bin/python -m timeit -s "import re; r = re.compile(r'(?:\.{2,}|…+)\s*展开全文\s*c?\s*$');
              s = '.' * 2000" "r.search(s)"              -> 46.4 ms per call (20,000 dots: 3.2 s)
      after   .venv/bin/python -m timeit -s "from sharelens.text import truncation_start;
              s = '.' * 2000" "truncation_start(s)"      -> 0.2 µs per call (20,000 dots: 0.2 µs)
    With the marker after the 2,000 dots: 14 µs (the regex: 1.1 µs).
    (`str.rstrip()` strips what `\s` matched: both are Python's Unicode whitespace.)"""
    head = text.rstrip()
    if head.endswith("c"):
        head = head[:-1].rstrip()
    if not head.endswith(_MARKER):
        return None
    head = head[: -len(_MARKER)].rstrip()
    if head.endswith(".."):
        return len(head.rstrip("."))
    if head.endswith("…"):
        return len(head.rstrip("…"))
    return None


def normalise(raw: str) -> Normalised:
    """Normalise one post's text. Idempotent on its own output."""
    raw = raw or ""
    start = truncation_start(raw.rstrip(_SPACE + _ZERO_WIDTH))
    truncated = start is not None
    end = start if start is not None else len(raw)

    chars: list[str] = []
    offs: list[int] = []
    has_link = False
    i = 0
    urls = {u.start(): u.end() for u in _URL.finditer(raw, 0, end)}
    while i < end:
        if i in urls:
            has_link = True
            for c in f" {URL_TOKEN} ":
                chars.append(c)
                offs.append(i)
            i = urls[i]
            continue
        c = raw[i]
        if c in _ZERO_WIDTH:
            i += 1
            continue
        if c in _SPACE:
            c = " "
            if chars and chars[-1] == " ":
                i += 1
                continue
        chars.append(c)
        offs.append(i)
        i += 1
    text = "".join(chars)
    has_link = has_link or URL_TOKEN in text
    # A link at the very end says nothing the flag does not; inside the text it marks "see here".
    while True:
        t = text.rstrip()
        if t.endswith(URL_TOKEN):
            t = t[: -len(URL_TOKEN)]
        if t == text:
            break
        text = t
    lead = len(text) - len(text.lstrip())
    text = text.strip()
    offsets = tuple(offs[lead : lead + len(text)])
    # Collapse doubled spaces the URL padding can create.
    if "  " in text:
        keep = [k for k in range(len(text)) if not (text[k] == " " and k > 0 and text[k - 1] == " ")]
        text = "".join(text[k] for k in keep)
        offsets = tuple(offsets[k] for k in keep)
    return Normalised(text=text, has_link=has_link, truncated=truncated, offsets=offsets)


def normalise_text(raw: str) -> str:
    return normalise(raw).text
