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
_TRUNCATED = re.compile(r"(?:\.{2,}|…+)\s*展开全文\s*c?\s*$")

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


def normalise(raw: str) -> Normalised:
    """Normalise one post's text. Idempotent on its own output."""
    raw = raw or ""
    stripped = raw.rstrip(_SPACE + _ZERO_WIDTH)
    m = _TRUNCATED.search(stripped)
    truncated = m is not None
    end = m.start() if m else len(raw)

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
