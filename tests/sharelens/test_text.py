import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sharelens.text import URL_TOKEN, normalise


def test_noise_goes_signal_stays() -> None:
    raw = "好可怜啊[泪] #热搜# @小明 \u200b\u200b http://t.cn/A6TJwYaL 看看 \u200b"
    n = normalise(raw)
    assert "\u200b" not in n.text
    assert "http" not in n.text
    assert n.has_link
    for keep in ("[泪]", "#热搜#", "@小明"):
        assert keep in n.text


def test_link_inside_text_becomes_a_token_and_trailing_link_is_dropped() -> None:
    assert normalise("看这里 http://t.cn/abc 然后转发").text == f"看这里 {URL_TOKEN} 然后转发"
    assert normalise("好看 http://t.cn/abc").text == "好看"


def test_truncation_marker_is_removed_and_flagged() -> None:
    n = normalise("【#医生陶勇送给网友一首诗#】来听↓  \u200b\u200b...展开全文")
    assert n.truncated
    assert n.text == "【#医生陶勇送给网友一首诗#】来听↓"


def test_offsets_point_into_the_raw_text() -> None:
    raw = " 我\u200b爱 http://t.cn/x 北京  天安门"
    n = normalise(raw)
    link_at = n.text.index(URL_TOKEN)
    for i, ch in enumerate(n.text):
        if link_at <= i < link_at + len(URL_TOKEN) or ch == " ":
            continue  # the link token stands for the whole URL and points at its start
        assert raw[n.offsets[i]] == ch
    assert raw[n.offsets[link_at]] == "h"
    start, end = n.raw_span(n.text.index("北京"), n.text.index("北京") + 2)
    assert raw[start:end] == "北京"


@given(st.text(alphabet=st.sampled_from(list("我爱北京 \u200b\u3000\n#@[]http://t.cn/展开全文….")), max_size=60))
def test_idempotent_and_offsets_consistent(raw: str) -> None:
    n = normalise(raw)
    assert normalise(n.text).text == n.text
    assert len(n.offsets) == len(n.text)
    assert list(n.offsets) == sorted(n.offsets)


# The truncation-marker pattern as it was before it became linear: the reference for what
# `normalise` must still find (it backtracked quadratically on long runs of dots).
_REFERENCE_TRUNCATED = re.compile(r"(?:\.{2,}|…+)\s*展开全文\s*c?\s*$")


def _reference_start(raw: str) -> int | None:
    from sharelens.text import _SPACE, _ZERO_WIDTH

    m = _REFERENCE_TRUNCATED.search(raw.rstrip(_SPACE + _ZERO_WIDTH))
    return m.start() if m else None


@pytest.mark.parametrize("raw", [
    "正文...展开全文", "正文…展开全文", "正文……  展开全文 c ", "正文 . 展开全文", "正文.展开全文", "正文..展开全文c",
    "正文..展开全文cc", "正文..\x0b展开全文\x0bc\x0b", "..…展开全文", "…..展开全文", "展开全文", "...展开全文\n\u200b",
    "正文...展开全文 x", "正文...展开 全文", "a" * 50 + "." * 3000 + "展开全文", "." * 2000, "…" * 2000,
    "." * 2000 + " " * 2000 + "展开全文c", "." * 2000 + " " * 2000 + "x", " " * 3000 + "c", "",
])
def test_truncation_marker_is_found_as_the_reference_finds_it(raw: str) -> None:
    start = _reference_start(raw)
    n = normalise(raw)
    assert n.truncated == (start is not None)
    if start is not None:
        assert n.text == normalise(raw[:start]).text


@given(st.lists(st.sampled_from([".", "…", " ", "\u3000", "\x0b", "展开全文", "展开", "全文", "c", "x", "正",
                                 "\u200b", "\n"]), max_size=30).map("".join))
def test_truncation_marker_agrees_with_the_reference(raw: str) -> None:
    assert normalise(raw).truncated == (_reference_start(raw) is not None)


def test_long_runs_of_dots_are_read_in_one_pass() -> None:
    """Correctness on the input that made the old pattern quadratic (its speed is measured in
    sharelens/text.py's comment, not asserted here)."""
    assert normalise("." * 20_000).text == "." * 20_000 and not normalise("." * 20_000).truncated
    n = normalise("转发" + "." * 20_000 + "展开全文")
    assert n.truncated and n.text == "转发"
