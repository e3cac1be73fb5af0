"""The page in a real browser: type a post and see ten motive bars and the tier as you type, ask for the
explanation, fill the optional context and see what the tier made of it, compare two drafts, score a CSV,
restore a draft from the history, give the API key when the server asks for one.

Needs Debian's /usr/bin/chromium and the `playwright` Python package (no downloaded browsers)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sharelens.labels import MOTIVES, TIERS

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "share-motives.md"
TIER_ZH = {"low": "低", "medium": "中", "high": "高", "viral": "爆"}
BUSY = "…"  # in the status line while a request is out: "预测中… predicting", "解释中… explaining"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(models_dir: Path, store, **settings: Any) -> Iterator[str]:
    import uvicorn

    from serving.main import create_app
    from serving.settings import Settings

    port = _free_port()
    app = create_app(Settings(models_dir=models_dir, port=port, **settings), store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server_url(serving_models_dir: Path, store) -> Iterator[str]:
    with _serve(serving_models_dir, store) as url:
        yield url


def _require_browser():
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@dataclass
class _Session:
    page: Any
    sent: list[dict] = field(default_factory=list)  # JSON bodies POSTed to /predict, as the page sent them
    headers: list[dict] = field(default_factory=list)  # and their request headers
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def until(self, cond: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
        """Wait for `cond` while the page runs (Playwright delivers its events during its own calls)."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; sent {self.sent}")
            self.page.wait_for_timeout(25)

    def after(self, n: int, expect, status: str = "#status") -> dict:
        """The first body sent after the n-th, once the status line says its answer has arrived."""
        self.until(lambda: len(self.sent) > n, "a /predict request")
        expect(self.page.locator(status)).not_to_contain_text(BUSY, timeout=20_000)
        return self.sent[n]


@contextmanager
def _open(sync_api, server_url: str) -> Iterator[_Session]:
    """The page on the app, with what it POSTs to /predict and its failures recorded."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
            s = _Session(page)

            def on_request(r) -> None:
                if r.method == "POST" and r.url.endswith("/predict"):
                    s.sent.append(r.post_data_json)
                    s.headers.append(r.headers)

            page.on("request", on_request)
            page.on("requestfailed", lambda r: s.failed.append(r.url))
            page.on("console", lambda m: s.console_errors.append(m.text) if m.type == "error" else None)
            page.goto(server_url + "/")
            yield s
        finally:
            browser.close()


def _explain(s: _Session, expect) -> None:
    """Click Explain and wait for its answer (not an earlier one) to be on the page."""
    n = len(s.sent)
    s.page.click("#explain")
    s.until(lambda: any(b.get("explain") for b in s.sent[n:]), "an explain request")
    expect(s.page.locator("#status")).not_to_contain_text(BUSY, timeout=20_000)
    assert s.sent[-1]["explain"] is True


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def _pp(delta: float) -> str:
    """The page's signed percentage points (JavaScript's Math.round: halves up)."""
    v = math.floor(1000 * delta + 0.5) / 10
    return "0.0 pp" if v == 0 else f"{'+' if v > 0 else '-'}{abs(v):.1f} pp"


def _posts(real_posts: list[str], n: int, lo: int = 20, hi: int = 120) -> list[str]:
    out = list(dict.fromkeys(p for p in real_posts if lo <= len(p) <= hi))[:n]
    assert len(out) == n
    return out


def test_page_predicts_as_you_type_and_explains_on_demand(server_url: str, real_posts: list[str],
                                                          tmp_path: Path) -> None:
    sync_api = _require_browser()
    expect = sync_api.expect
    # Emoji outside the BMP first: the API counts code points, JavaScript UTF-16 units.
    post = "😀🎉 " + _posts(real_posts, 1)[0]
    with _open(sync_api, server_url) as s:
        page = s.page
        page.fill("#text", post)  # no click: the text changing is enough
        assert s.after(0, expect) == {"text": post, "explain": False}
        expect(page.locator("#motives .bar")).to_have_count(10)
        api = httpx.post(server_url + "/predict", json={"text": post}).json()["results"][0]
        bars = page.locator("#motives .bar")
        assert [(b.get_attribute("data-motive"), b.locator(".pct").inner_text()) for b in bars.all()] == [
            (m["motive"], _pct(m["probability"])) for m in api["motive"]["probabilities"]]
        assert any("\u4e00" <= c <= "\u9fff" for c in bars.nth(0).inner_text())
        assert page.locator("#tier .seg").count() == 4
        assert page.locator("#highlighted mark").count() == 0  # not explained until asked
        assert page.locator("#explain-hint").is_visible()

        # Typing a few characters sends one request, for the whole text, once the typing pauses.
        n = len(s.sent)
        page.locator("#text").press_sequentially("转发扩散求助！", delay=40)
        post += "转发扩散求助！"
        assert s.after(n, expect) == {"text": post, "explain": False}
        page.wait_for_timeout(700)  # longer than the debounce: nothing else comes
        assert s.sent[n:] == [{"text": post, "explain": False}]

        _explain(s, expect)
        assert s.sent[-1] == {"text": post, "explain": True}
        page.wait_for_selector("#highlighted mark")
        assert page.inner_text("#highlighted") == post  # the text itself, re-rendered intact
        marks = page.locator("#highlighted mark")
        assert 0 < marks.count() <= 10
        api = httpx.post(server_url + "/predict", json={"text": post, "explain": True}).json()
        expected = sorted(w["word"] for w in api["results"][0]["explanation"]["motive"]["words"])
        assert sorted(marks.all_inner_texts()) == expected  # the same words, at the same places
        assert page.inner_text("#status") == ""
        assert page.locator("#explain-hint").is_hidden()
        page.select_option("#explain-target", "tier")
        page.wait_for_selector("#highlighted mark")

        # The text changes: the old explanation goes, the new prediction comes without one.
        n = len(s.sent)
        page.locator("#text").press("Control+End")
        page.locator("#text").press_sequentially("啊")
        assert s.after(n, expect) == {"text": post + "啊", "explain": False}
        expect(page.locator("#highlighted mark")).to_have_count(0)
        assert page.locator("#explain-hint").is_visible()

        # The API's refusal in the status line; a blank text is not sent at all.
        n = len(s.sent)
        page.fill("#text", "长" * 2001)
        s.after(n, expect)
        expect(page.locator("#status")).to_contain_text("413")
        assert "text exceeds 2000 characters" in page.inner_text("#status")
        n = len(s.sent)
        page.fill("#text", "   ")
        page.wait_for_timeout(700)
        assert len(s.sent) == n
        assert page.locator("#result").is_hidden()
        assert page.inner_text("#status") == ""

        page.fill("#text", post)
        s.after(n, expect)
        expect(page.locator("#status")).to_have_text("")
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    assert not s.failed, f"requests failed (external resources?): {s.failed}"
    # The 413 step is logged by the browser as a failed resource; nothing else may be.
    assert all("413" in m for m in s.console_errors), s.console_errors


def _canned(answer: dict, top: str, tiers: tuple[float, float, float, float] | None = None) -> dict:
    """A real /predict answer, edited: `top` at 0.91, the other motives at 0.01."""
    data = json.loads(json.dumps(answer))
    result = data["results"][0]
    probs = [{"motive": m, "zh": next(p["zh"] for p in result["motive"]["probabilities"] if p["motive"] == m),
              "probability": 0.91 if m == top else 0.01} for m in MOTIVES]
    result["motive"] = {"top": top, "top_zh": next(p["zh"] for p in probs if p["motive"] == top),
                        "probabilities": sorted(probs, key=lambda p: -p["probability"])}
    if tiers is not None:
        result["tier"]["probabilities"] = [{"tier": t, "probability": p} for t, p in zip(TIERS, tiers, strict=True)]
        cumulative = 0.0
        for t, p in zip(TIERS, tiers, strict=True):  # the server's decision: the median
            cumulative += p
            if cumulative >= 0.5:
                result["tier"]["top"] = t
                break
    return data


def test_page_drops_stale_answers(server_url: str, real_posts: list[str]) -> None:
    """The answer to an older text arrives after the newer one's: the newer stays on the page."""
    sync_api = _require_browser()
    expect = sync_api.expect
    old, new = _posts(real_posts, 2)
    answers = {t: httpx.post(server_url + "/predict", json={"text": t}).json() for t in (old, new)}
    with _open(sync_api, server_url) as s:
        page = s.page
        held: list[Any] = []
        page.route("**/predict", lambda route: held.append(route))  # answered below, in the order chosen
        page.fill("#text", old)
        s.until(lambda: len(held) == 1, "the first request")
        page.fill("#text", new)
        s.until(lambda: len(held) == 2, "the second request")
        assert [r.request.post_data_json["text"] for r in held] == [old, new]
        held[1].fulfill(status=200, content_type="application/json",
                        body=json.dumps(_canned(answers[new], "public_warning")))
        expect(page.locator("#top-motive")).to_have_text("预警辟谣 public_warning")
        with page.expect_response("**/predict"):
            held[0].fulfill(status=200, content_type="application/json",
                            body=json.dumps(_canned(answers[old], "incentive")))
        page.wait_for_timeout(300)  # the stale answer has been read and parsed by now
        expect(page.locator("#top-motive")).to_have_text("预警辟谣 public_warning")
        assert page.locator("#motives .bar.top").get_attribute("data-motive") == "public_warning"
        assert page.inner_text("#status") == ""


def test_page_labels_follow_the_spec(server_url: str, real_posts: list[str]) -> None:
    """Each motive's definition on hover and the tier thresholds, as the label spec has them; the tier
    decision named as the median, apart from the most likely tier (a canned answer where they differ).
    Without the spec beside the checkout (../shared) only the tier decision's labels are checked."""
    motives: list[tuple[str, ...]] = []
    ranges: dict[str, str] = {}
    if SPEC.exists():
        spec = SPEC.read_text(encoding="utf-8")
        motives = re.findall(r"^\| `([a-z_]+)` \| (\S+) \| (.+?) \| (.+?) \|$", spec, flags=re.M)
        assert [m[0] for m in motives] == list(MOTIVES)
        ranges = dict(re.findall(r"^\| `(low|medium|high|viral)` \| (.+?) \|$", spec, flags=re.M))
        assert list(ranges) == list(TIERS)
    sync_api = _require_browser()
    expect = sync_api.expect
    post = _posts(real_posts, 1)[0]
    answer = httpx.post(server_url + "/predict", json={"text": post}).json()
    # median high (0.42 + 0.06 + 0.08 reaches 0.5), most likely viral
    canned = _canned(answer, "opinion", (0.42, 0.06, 0.08, 0.44))
    assert canned["results"][0]["tier"]["top"] == "high"
    with _open(sync_api, server_url) as s:
        page = s.page
        page.route("**/predict", lambda route: route.fulfill(status=200, content_type="application/json",
                                                              body=json.dumps(canned)))
        page.fill("#text", post)
        s.after(0, expect)
        expect(page.locator("#motives .bar")).to_have_count(10)
        for motive, zh, gets, cues in motives:
            title = page.locator(f"#motives .bar[data-motive={motive}]").get_attribute("title")
            assert title.startswith(f"{zh} {motive}\n")
            assert gets in title and cues in title, (motive, title)
        assert page.locator("#top-motive").get_attribute("title").startswith("观点表达 opinion")
        if ranges:
            assert page.locator("#tier .seg .range").all_inner_texts() == [ranges[t] for t in TIERS]
        assert page.inner_text("#tier-decision") == "判定 decision: 高 high"
        assert page.inner_text("#tier-likely") == "最可能 most likely: 爆 viral 44.0%"
        assert "median" in page.locator("#tier-decision").get_attribute("title")
        assert page.get_attribute("#tier .seg.decision", "data-tier") == "high"
        assert page.get_attribute("#tier .seg.likely", "data-tier") == "viral"
        assert "最可能 most likely: high" not in page.inner_text("#tier")  # the old page's mislabel


def test_page_sends_context_and_shows_contributions(server_url: str, real_posts: list[str]) -> None:
    sync_api = _require_browser()
    expect = sync_api.expect
    post = _posts(real_posts, 1)[0]
    channels = httpx.get(server_url + "/models").json()["channels"]
    assert channels, "the fixture's production model reads context"
    with _open(sync_api, server_url) as s:
        page = s.page
        options = page.locator("#ctx-channel option")
        expect(options).to_have_count(1 + len(channels))  # filled from GET /models after load
        assert options.all_text_contents() == ["未知 unknown", *channels]  # hidden: not inner text
        assert page.locator("#ctx-channel").input_value() == ""

        # Nothing filled: no `context` key at all.
        page.fill("#text", post)
        s.after(0, expect)
        _explain(s, expect)
        assert s.sent[-1] == {"text": post, "explain": True}
        expect(page.locator("#context-used")).to_have_text("未使用背景 No context used")
        assert page.locator("#context-scores .ctx").count() == 0
        assert page.locator("#context-box").is_hidden()

        assert page.locator("#ctx-followers").is_hidden()  # collapsed until asked for
        page.click("#context summary")
        # A context field changing predicts again too (without explanation).
        n = len(s.sent)
        page.select_option("#ctx-channel", channels[0])
        assert s.after(n, expect) == {"text": post, "explain": False, "context": {"channel": channels[0]}}
        page.select_option("#ctx-vip", "true")
        page.fill("#ctx-followers", "175")
        page.fill("#ctx-posted-at", "2025-01-06T20:30")
        page.fill("#ctx-history-posts", "25")  # without its median: history is not sent
        _explain(s, expect)
        context = {"channel": channels[0], "vip": True, "followers": 175, "posted_at": "2025-01-06T20:30:00+08:00"}
        assert s.sent[-1] == {"text": post, "explain": True, "context": context}
        assert page.inner_text("#status") == ""

        api = httpx.post(server_url + "/predict", json=s.sent[-1]).json()["results"][0]
        assert sorted(api["context"]["used"]) == sorted(context)
        used = page.inner_text("#context-used")
        assert used == "背景已使用 Context used: " + ", ".join(api["context"]["used"])
        expected = api["explanation"]["tier"]["context"]
        assert sorted(c["field"] for c in expected) == sorted(context)  # one contribution per field used
        rows = page.locator("#context-scores .ctx")
        expect(rows).to_have_count(len(expected))
        assert page.locator("#context-box").is_visible()
        for i, c in enumerate(expected):  # in the API's order, coloured by sign
            row = rows.nth(i)
            sign = "+" if c["score"] >= 0 else "-"
            assert row.inner_text() == f"{c['field']}={c['value']} {sign}{abs(c['score']):.2f}"
            assert row.get_attribute("class").split()[-1] == ("pos" if c["score"] >= 0 else "neg")
            assert row.get_attribute("data-field") == c["field"]

        # The other switches: vip back to unknown, verified no, history complete.
        page.select_option("#ctx-vip", "")
        page.select_option("#ctx-verified", "false")
        page.fill("#ctx-history-median", "850.5")
        _explain(s, expect)
        assert s.sent[-1]["context"] == {"channel": channels[0], "verified": False, "followers": 175,
                                         "posted_at": "2025-01-06T20:30:00+08:00",
                                         "author_history": {"posts": 25, "median_engagement": 850.5}}
        expect(page.locator("#context-used")).to_contain_text("author_history")

        # A bad value: the API's 422 detail in the status line.
        page.fill("#ctx-followers", "-1")
        _explain(s, expect)
        expect(page.locator("#status")).to_contain_text("422")
        assert "context.followers" in page.inner_text("#status")

        # Cleared: no context key again.
        page.click("#ctx-clear")
        _explain(s, expect)
        assert s.sent[-1] == {"text": post, "explain": True}
        expect(page.locator("#status")).to_have_text("")
        expect(page.locator("#context-used")).to_have_text("未使用背景 No context used")
        assert not s.failed, f"requests failed (external resources?): {s.failed}"
        assert all("422" in m for m in s.console_errors), s.console_errors


def test_page_text_only_model_says_context_was_ignored(server_url: str, real_posts: list[str],
                                                       versions: dict[str, str]) -> None:
    """The page always asks the default model; here its requests are redirected to `canary`, a
    text-only model, through the real server."""
    sync_api = _require_browser()
    expect = sync_api.expect
    post = _posts(real_posts, 1)[0]
    with _open(sync_api, server_url) as s:
        page = s.page

        def to_canary(route) -> None:
            body = json.loads(route.request.post_data)
            route.continue_(post_data=json.dumps({**body, "model": "canary"}))

        page.route("**/predict", to_canary)
        page.fill("#text", post)
        page.click("#context summary")
        expect(page.locator("#ctx-channel option")).not_to_have_count(1)
        page.select_option("#ctx-channel", index=1)
        page.select_option("#ctx-vip", "false")
        _explain(s, expect)
        assert set(s.sent[-1]["context"]) == {"channel", "vip"}
        expect(page.locator("#context-used")).to_have_text("未使用背景 No context used")
        assert versions["canary"] in page.inner_text("#model")
        notes = page.locator("#context-notes li").all_inner_texts()
        assert any("context was ignored" in n for n in notes), notes
        assert page.locator("#context-scores .ctx").count() == 0
        assert page.locator("#context-box").is_hidden()
        assert page.inner_text("#status") == ""


def test_page_renders_canned_context_contributions(server_url: str) -> None:
    """A canned answer (a real one, edited) with contributions of both signs and hostile strings:
    rendered in order, coloured by sign, as text."""
    sync_api = _require_browser()
    expect = sync_api.expect
    hostile = "<img src=x onerror=alert(1)>"
    contributions = [{"field": "channel", "value": "明星", "score": 0.42},
                     {"field": "followers", "value": "175", "score": -0.137},
                     {"field": "posted_at", "value": hostile, "score": 0.003}]
    with _open(sync_api, server_url) as s:
        page = s.page

        def canned(route) -> None:
            if not route.request.post_data_json.get("explain"):
                route.continue_()
                return
            data = route.fetch().json()
            result = data["results"][0]
            result["context"] = {"used": ["channel", "followers", "posted_at"], "unknown": ["vip"],
                                 "notes": [f"note {hostile}", "second note"]}
            result["explanation"]["tier"]["context"] = contributions
            route.fulfill(status=200, content_type="application/json", body=json.dumps(data))

        page.route("**/predict", canned)
        page.fill("#text", "转发抽奖！关注并转发本条微博")
        _explain(s, expect)
        rows = page.locator("#context-scores .ctx")
        expect(rows).to_have_count(3)
        assert rows.all_inner_texts() == ["channel=明星 +0.42", "followers=175 -0.14", f"posted_at={hostile} +0.00"]
        assert [r.split()[-1] for r in page.locator("#context-scores .ctx").evaluate_all(
            "els => els.map(e => e.className)")] == ["pos", "neg", "pos"]
        # Stronger contributions are more opaque, like the word highlights.
        alphas = [float(bg.rsplit(",", 1)[1].rstrip(")")) for bg in rows.evaluate_all(
            "els => els.map(e => e.style.backgroundColor)")]
        assert alphas[0] > alphas[1] > alphas[2]
        assert page.inner_text("#context-used") == "背景已使用 Context used: channel, followers, posted_at"
        assert page.locator("#context-notes li").all_inner_texts() == [f"note {hostile}", "second note"]
        assert page.locator("#result img").count() == 0  # text, never HTML
        assert page.inner_text("#status") == ""


def test_page_compares_two_drafts(server_url: str, real_posts: list[str]) -> None:
    sync_api = _require_browser()
    expect = sync_api.expect
    a, b = _posts(real_posts, 2)
    with _open(sync_api, server_url) as s:
        page = s.page
        page.fill("#text", a)
        s.after(0, expect)
        # Compare starts from the current draft, in A and B alike: nothing has changed yet.
        n = len(s.sent)
        page.click("#tab-compare")
        assert s.after(n, expect, "#cmp-status") == {"texts": [a, a], "explain": False}
        expect(page.locator("#cmp-motives tbody tr")).to_have_count(10)
        assert set(page.locator("#cmp-motives .delta .dval").all_inner_texts()) == {"0.0 pp"}
        assert page.locator("#text").is_hidden() and page.locator("#cmp-a").input_value() == a

        n = len(s.sent)
        page.fill("#cmp-b", b)
        assert s.after(n, expect, "#cmp-status") == {"texts": [a, b], "explain": False}
        ra, rb = httpx.post(server_url + "/predict", json={"texts": [a, b]}).json()["results"]
        pa = {m["motive"]: m["probability"] for m in ra["motive"]["probabilities"]}
        pb = {m["motive"]: m["probability"] for m in rb["motive"]["probabilities"]}
        expect(page.locator("#cmp-motives tbody tr[data-motive=incentive] .b")).to_have_text(_pct(pb["incentive"]))
        rows = page.locator("#cmp-motives tbody tr")
        assert [r.get_attribute("data-motive") for r in rows.all()] == list(MOTIVES)  # the spec's order
        deltas = []
        for m in MOTIVES:
            row = page.locator(f"#cmp-motives tbody tr[data-motive={m}]")
            assert row.locator(".a").inner_text() == _pct(pa[m])
            assert row.locator(".b").inner_text() == _pct(pb[m])
            assert row.locator(".dval").inner_text() == _pp(pb[m] - pa[m])
            deltas.append(row.locator(".dval").inner_text())
            assert "The sharer gets" in row.get_attribute("title")
        assert set(deltas) != {"0.0 pp"}, "two different posts, the same probabilities?"
        assert any(d.startswith("+") for d in deltas) and any(d.startswith("-") for d in deltas)  # they sum to 0
        ta = {t["tier"]: t["probability"] for t in ra["tier"]["probabilities"]}
        tb = {t["tier"]: t["probability"] for t in rb["tier"]["probabilities"]}
        for t in TIERS:
            row = page.locator(f"#cmp-tiers tbody tr[data-tier={t}]")
            assert row.locator(".dval").inner_text() == _pp(tb[t] - ta[t])
            assert row.locator(".a").inner_text() == _pct(ta[t]) and row.locator(".b").inner_text() == _pct(tb[t])
            cls = row.locator(".delta").get_attribute("class").split()
            assert cls[-1] == ("same" if _pp(tb[t] - ta[t]) == "0.0 pp" else "up" if tb[t] > ta[t] else "down")
        assert page.inner_text("#cmp-tier-change") == (
            f"层级判定 Tier decision (中位数 median): A {TIER_ZH[ra['tier']['top']]} {ra['tier']['top']} → "
            f"B {TIER_ZH[rb['tier']['top']]} {rb['tier']['top']}")
        assert f"A {ra['motive']['top_zh']} {ra['motive']['top']} → B {rb['motive']['top_zh']} {rb['motive']['top']}" \
            in page.inner_text("#cmp-motive-change")

        # The context panel applies to both drafts.
        page.click("#context summary")
        n = len(s.sent)
        page.fill("#ctx-followers", "175")
        assert s.after(n, expect, "#cmp-status") == {
            "posts": [{"text": a, "context": {"followers": 175}}, {"text": b, "context": {"followers": 175}}],
            "explain": False}
        # Swapped: every change flips its sign.
        n = len(s.sent)
        page.click("#cmp-swap")
        assert s.after(n, expect, "#cmp-status")["posts"][0]["text"] == b
        ra, rb = httpx.post(server_url + "/predict", json=s.sent[-1]).json()["results"]
        pa = {m["motive"]: m["probability"] for m in ra["motive"]["probabilities"]}
        pb = {m["motive"]: m["probability"] for m in rb["motive"]["probabilities"]}
        expect(page.locator("#cmp-motives tbody tr[data-motive=opinion] .dval")).to_have_text(
            _pp(pb["opinion"] - pa["opinion"]))
        assert page.inner_text("#cmp-status") == ""
        assert not s.failed and not s.console_errors, (s.failed, s.console_errors)


def _csv_bytes(rows: list[list[str]], bom: bool = True) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return (("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8")


def test_page_scores_a_csv_sorts_and_downloads(server_url: str, real_posts: list[str]) -> None:
    sync_api = _require_browser()
    expect = sync_api.expect
    channels = httpx.get(server_url + "/models").json()["channels"]
    texts = _posts(real_posts, 70, 10, 200)
    texts[3] = 'line one, with "quotes"\nline two, 转发'  # comma, quotes and a newline inside one field
    texts[5] = "@小明 " + texts[5]  # a spreadsheet would run these two as formulas
    texts[6] = '=HYPERLINK("http://x") ' + texts[6]
    header = ["id", "text", "followers", "channel", "vip"]
    rows = []
    expected_posts: list[dict | None] = []
    for i, t in enumerate(texts):
        followers = str(100 * i) if i % 3 == 0 else ""
        channel = channels[i % len(channels)] if i % 4 == 0 else ""
        vip = "是" if i % 5 == 0 else ("false" if i % 5 == 1 else "")
        if i == 10:
            followers = "many"  # not a number: the page refuses the row, it is never sent
        if i == 11:
            t = "  "  # blank: refused likewise
        if i == 67:
            followers = "-5"  # a number the API refuses (422): its batch is retried post by post
        rows.append([f"p{i}", t, followers, channel, vip])
        context = {k: v for k, v in (("followers", int(followers) if followers.lstrip("-").isdigit() else None),
                                     ("channel", channel or None),
                                     ("vip", {"是": True, "false": False}.get(vip))) if v is not None}
        expected_posts.append(None if i in (10, 11) else ({"text": t, "context": context} if context else {"text": t}))
    sendable = [p for p in expected_posts if p is not None]
    with _open(sync_api, server_url) as s:
        page = s.page
        page.click("#tab-csv")
        assert page.locator("#context").is_hidden()  # the file carries its own context
        page.set_input_files("#csv-file", files=[{"name": "posts.csv", "mimeType": "text/csv",
                                                  "buffer": _csv_bytes([header, *rows])}])
        expect(page.locator("#csv-status")).to_contain_text("完成 Done", timeout=30_000)
        # Batches of at most 64: 64 + the last 4, which the API refuses as a whole, then those 4 one by one.
        assert [len(b["posts"]) for b in s.sent] == [64, 4, 1, 1, 1, 1]
        assert all(b["explain"] is False for b in s.sent)
        assert s.sent[0]["posts"] + s.sent[1]["posts"] == sendable
        expect(page.locator("#csv-status")).to_contain_text("67 行已评分 rows scored，3 行有错误")

        table = page.locator("#csv-table tbody tr")
        expect(table).to_have_count(70)
        assert table.nth(3).locator("td.text").get_attribute("title") == texts[3]
        assert "context.followers" in page.locator("#csv-table tr[data-row='11'] td.error").inner_text()
        assert "empty text" in page.locator("#csv-table tr[data-row='12'] td.error").inner_text()
        assert "context.followers" in page.locator("#csv-table tr[data-row='68'] td.error").inner_text()

        # Sort: a probability column high first, again low first, errors last either way.
        def column(key: str) -> list[str]:
            return page.locator(f"#csv-table tbody td.{key}").all_inner_texts()

        page.click("#csv-table th[data-key=p] button")
        assert page.get_attribute("#csv-table th[data-key=p]", "aria-sort") == "descending"
        values = [float(v.rstrip("%")) for v in column("p") if v]
        assert values == sorted(values, reverse=True) and len(values) == 67
        assert column("p")[-3:] == ["", "", ""]
        page.click("#csv-table th[data-key=p] button")
        assert page.get_attribute("#csv-table th[data-key=p]", "aria-sort") == "ascending"
        values = [float(v.rstrip("%")) for v in column("p") if v]
        assert values == sorted(values) and column("p")[-1] == ""
        page.click("#csv-table th[data-key=tier] button")  # ordinal: viral > high > medium > low
        ranks = [TIERS.index(v.split()[-1]) for v in column("tier") if v]
        assert ranks == sorted(ranks, reverse=True)
        page.click("#csv-table th[data-key=row] button")
        assert column("row")[:3] == ["1", "2", "3"]

        with page.expect_download() as info:
            page.click("#csv-download")
        download = info.value
        assert download.suggested_filename == "posts-scored.csv"
        raw = Path(download.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM, for Excel
    out = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert len(out) == 70
    assert list(out[0])[:5] == header  # the file's own columns first, as they were
    # in the file's order, the newline kept; a cell a spreadsheet would run as a formula gets a leading '
    assert [r["text"] for r in out] == [("'" + r[1]) if r[1][:1] in "=+-@" else r[1] for r in rows]
    assert out[5]["text"].startswith("'@小明") and out[6]["text"].startswith("'=HYPERLINK")
    assert out[67]["followers"] == "-5"  # a number stays a number
    assert [r["id"] for r in out] == [f"p{i}" for i in range(70)]
    assert {f"motive_{m}" for m in MOTIVES} | {f"tier_{t}" for t in TIERS} | {"top_motive", "tier_decision"} \
        <= set(out[0])
    api = [r for start in range(0, len(sendable), 64) for r in
           httpx.post(server_url + "/predict", json={"posts": [p for p in sendable[start:start + 64]
                                                               if p["text"] != texts[67]]}).json()["results"]]
    scored = [r for r, p in zip(out, expected_posts, strict=True) if p is not None and p["text"] != texts[67]]
    assert len(scored) == len(api) == 67
    for row, res in zip(scored, api, strict=True):
        assert row["top_motive"] == res["motive"]["top"] and row["tier_decision"] == res["tier"]["top"]
        assert row["error"] == ""
        for m in res["motive"]["probabilities"]:
            assert abs(float(row[f"motive_{m['motive']}"]) - m["probability"]) < 1e-6
        for t in res["tier"]["probabilities"]:
            assert abs(float(row[f"tier_{t['tier']}"]) - t["probability"]) < 1e-6
        assert abs(sum(float(row[f"motive_{m}"]) for m in MOTIVES) - 1) < 1e-4
    for i in (10, 11, 67):
        assert out[i]["top_motive"] == "" and out[i]["error"], out[i]
    assert not s.failed, s.failed


def test_page_refuses_a_csv_it_cannot_score(server_url: str) -> None:
    sync_api = _require_browser()
    expect = sync_api.expect
    with _open(sync_api, server_url) as s:
        page = s.page
        page.click("#tab-csv")

        def upload(data: bytes) -> None:
            page.set_input_files("#csv-file", files=[{"name": "x.csv", "mimeType": "text/csv", "buffer": data}])

        upload(_csv_bytes([["text"], *[[f"第{i}条 微博"] for i in range(501)]]))
        expect(page.locator("#csv-status")).to_contain_text("501")
        assert "at most 500" in page.inner_text("#csv-status")
        upload(_csv_bytes([["id", "body"], ["1", "转发抽奖"]]))
        expect(page.locator("#csv-status")).to_contain_text("No text column")
        assert "id, body" in page.inner_text("#csv-status")
        upload(b'text\n"never closed\n')
        expect(page.locator("#csv-status")).to_contain_text("never closed")
        page.wait_for_timeout(300)
        assert s.sent == [] and page.locator("#csv-table").is_hidden()
        assert page.locator("#csv-download").is_disabled()
        # 500 rows is allowed (and GB18030 read): 8 requests of at most 64.
        upload(("text\n" + "".join(f"第{i}条，转发抽奖\n" for i in range(500))).encode("gb18030"))
        expect(page.locator("#csv-status")).to_contain_text("完成 Done", timeout=60_000)
        assert [len(b["posts"]) for b in s.sent] == [64] * 7 + [52]
        assert s.sent[0]["posts"][0] == {"text": "第0条，转发抽奖"}
        expect(page.locator("#csv-table tbody tr")).to_have_count(500)


def test_page_keeps_the_last_drafts(server_url: str, real_posts: list[str]) -> None:
    sync_api = _require_browser()
    expect = sync_api.expect
    first, second = _posts(real_posts, 2)
    with _open(sync_api, server_url) as s:
        page = s.page
        expect(page.locator("#history")).to_contain_text("No drafts yet")
        page.fill("#text", first)
        s.after(0, expect)
        page.locator("#text").press("Control+End")
        page.locator("#text").press_sequentially("！！")  # the same draft, edited: still one entry
        s.until(lambda: s.sent[-1]["text"] == first + "！！", "the edit's request")
        expect(page.locator("#status")).not_to_contain_text(BUSY)
        expect(page.locator("#history li.draft")).to_have_count(1)
        page.click("#new-draft")
        assert page.locator("#text").input_value() == ""
        page.fill("#text", second)
        s.until(lambda: s.sent[-1]["text"] == second, "the second draft's request")
        expect(page.locator("#history li.draft")).to_have_count(2)

        page.reload()
        drafts = page.locator("#history li.draft")
        expect(drafts).to_have_count(2)
        assert drafts.nth(0).locator(".restore").get_attribute("title") == second  # newest first
        assert drafts.nth(1).locator(".restore").get_attribute("title") == first + "！！"
        assert page.locator("#text").input_value() == ""
        n = len(s.sent)
        drafts.nth(1).locator(".restore").click()
        assert page.locator("#text").input_value() == first + "！！"
        assert s.after(n, expect) == {"text": first + "！！", "explain": False}
        expect(page.locator("#motives .bar")).to_have_count(10)

        # At most 20, newest first: a 21st pushes out the oldest.
        old = [{"id": f"d{i}", "text": f"旧草稿 {i}", "form": {}, "at": "2025-01-01T00:00:00Z",
                "motive": "opinion", "tier": "low"} for i in range(20)]
        page.evaluate("drafts => localStorage.setItem('sharelens-drafts', JSON.stringify(drafts))", old)
        page.reload()
        expect(drafts).to_have_count(20)
        # A restored draft brings its context back.
        page.evaluate("""() => {
            const d = JSON.parse(localStorage.getItem('sharelens-drafts'));
            d[0].form = {'ctx-followers': '175', 'ctx-vip': 'true'};
            localStorage.setItem('sharelens-drafts', JSON.stringify(d));
        }""")
        n = len(s.sent)
        drafts.nth(0).locator(".restore").click()
        assert s.after(n, expect) == {"text": "旧草稿 0", "explain": False, "context": {"vip": True, "followers": 175}}
        page.click("#new-draft")
        n = len(s.sent)
        page.fill("#text", second + "？")
        s.until(lambda: len(s.sent) > n and s.sent[-1]["text"] == second + "？", "the new draft's request")
        expect(drafts.nth(0).locator(".restore")).to_have_attribute("title", second + "？")
        expect(drafts).to_have_count(20)
        titles = [d.locator(".restore").get_attribute("title") for d in drafts.all()]
        assert "旧草稿 19" not in titles and "旧草稿 0" in titles and "旧草稿 18" in titles
        # A / B send a draft to the comparison.
        drafts.nth(1).locator(".to-a").click()
        assert page.locator("#cmp-a").input_value() == titles[1]
        assert page.locator("#cmp-a").is_visible()


def test_page_asks_for_the_api_key(serving_models_dir: Path, store, real_posts: list[str]) -> None:
    """A server with SHARELENS_API_KEY: the page says so (401, E412), takes the key, and then works."""
    sync_api = _require_browser()
    expect = sync_api.expect
    key = "page-test-key-0123456789"
    post = _posts(real_posts, 1)[0]
    with _serve(serving_models_dir, store, api_key=key) as url, _open(sync_api, url) as s:
        page = s.page
        expect(page.locator("#key-box")).to_be_visible()  # GET /models was refused
        expect(page.locator("#key-message")).to_contain_text("requires an API key")
        assert page.locator("#ctx-channel option").count() == 1
        page.fill("#text", post)
        s.after(0, expect)
        expect(page.locator("#status")).to_contain_text("401")
        assert "E412" in page.inner_text("#status")
        assert "x-api-key" not in s.headers[0]

        page.fill("#api-key", "wrong")
        n = len(s.sent)
        page.click("#key-save")
        s.after(n, expect)
        expect(page.locator("#key-message")).to_contain_text("rejected")

        n = len(s.sent)
        page.fill("#api-key", key)
        page.click("#key-save")  # and the refused prediction runs again
        assert s.after(n, expect) == {"text": post, "explain": False}
        expect(page.locator("#motives .bar")).to_have_count(10)
        assert s.headers[-1]["x-api-key"] == key
        assert page.inner_text("#status") == ""
        expect(page.locator("#ctx-channel option")).not_to_have_count(1)  # /models answered too
        _explain(s, expect)
        assert s.headers[-1]["x-api-key"] == key
        page.wait_for_selector("#highlighted mark")
        assert page.evaluate("() => localStorage.getItem('sharelens-api-key')") is None  # not remembered
        assert page.locator("#api-key").input_value() == ""  # not left on the page

        page.reload()  # the tab's session keeps it
        n = len(s.sent)
        page.fill("#text", post)
        s.after(n, expect)
        expect(page.locator("#motives .bar")).to_have_count(10)
        page.click("#key-forget")
        n = len(s.sent)
        page.fill("#text", post + "？")
        s.after(n, expect)
        expect(page.locator("#status")).to_contain_text("401")

        # Remembered in the browser only when asked.
        n = len(s.sent)
        page.check("#key-remember")
        page.fill("#api-key", key)
        page.click("#key-save")
        assert s.after(n, expect) == {"text": post + "？", "explain": False}
        assert s.headers[-1]["x-api-key"] == key
        expect(page.locator("#status")).to_have_text("")
        assert page.evaluate("() => localStorage.getItem('sharelens-api-key')") == key
