"""The page in a real browser: paste a post, click Predict, see ten motive bars and highlighted words;
fill the optional context and see what the tier made of it.

Needs Debian's /usr/bin/chromium and the `playwright` Python package (no downloaded browsers)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server_url(serving_models_dir: Path, store) -> Iterator[str]:
    import uvicorn

    from serving.main import create_app
    from serving.settings import Settings

    port = _free_port()
    app = create_app(Settings(models_dir=serving_models_dir, port=port), store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_page_predicts_and_highlights(server_url: str, real_posts: list[str], tmp_path: Path) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

    # Emoji outside the BMP first: the API counts code points, JavaScript UTF-16 units.
    post = "😀🎉 " + next(p for p in real_posts if 20 <= len(p) <= 120)
    expect = sync_api.expect
    failed: list[str] = []
    console_errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1200})
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(server_url + "/")
            page.fill("#text", post)
            page.click("#predict")
            # Locator waits, not wait_for_function: the page's CSP (rightly) forbids string eval.
            expect(page.locator("#motives .bar")).to_have_count(10, timeout=20_000)
            page.wait_for_selector("#highlighted mark", timeout=20_000)

            bars = page.locator("#motives .bar")
            assert bars.count() == 10
            first = bars.nth(0).inner_text()
            assert "%" in first and any("\u4e00" <= c <= "\u9fff" for c in first)
            assert page.locator("#tier .seg").count() == 4
            assert page.inner_text("#highlighted") == post  # the text itself, re-rendered intact
            marks = page.locator("#highlighted mark")
            assert 0 < marks.count() <= 10
            api = httpx.post(server_url + "/predict", json={"text": post, "explain": True}).json()
            expected = sorted(w["word"] for w in api["results"][0]["explanation"]["motive"]["words"])
            assert sorted(marks.all_inner_texts()) == expected  # the same words, at the same places
            assert page.inner_text("#status") == ""

            page.select_option("#explain-target", "tier")
            page.wait_for_selector("#highlighted mark")

            page.fill("#text", "   ")
            page.click("#predict")
            expect(page.locator("#status")).to_contain_text("422")
            assert "text must not be empty or whitespace" in page.inner_text("#status")

            page.fill("#text", post)
            page.click("#predict")
            expect(page.locator("#status")).to_have_text("")
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert not failed, f"requests failed (external resources?): {failed}"
    # The 422 of the blank-text step is logged by the browser as a failed resource; nothing else may be.
    assert all("422" in m for m in console_errors), console_errors


def _require_browser():
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@dataclass
class _Session:
    page: Any
    sent: list[dict] = field(default_factory=list)  # JSON bodies POSTed to /predict, as the page sent them
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def _open(sync_api, server_url: str) -> Iterator[_Session]:
    """The page on the app, with what it POSTs to /predict and its failures recorded."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            s = _Session(page)
            page.on("request", lambda r: s.sent.append(r.post_data_json)
                    if r.method == "POST" and r.url.endswith("/predict") else None)
            page.on("requestfailed", lambda r: s.failed.append(r.url))
            page.on("console", lambda m: s.console_errors.append(m.text) if m.type == "error" else None)
            page.goto(server_url + "/")
            yield s
        finally:
            browser.close()


def _predict(s: _Session, expect) -> None:
    """Click Predict and wait for this answer (not the previous one) to be on the page."""
    n = len(s.sent)
    s.page.click("#predict")
    expect(s.page.locator("#status")).not_to_contain_text("predicting", timeout=20_000)
    assert len(s.sent) == n + 1


def test_page_sends_context_and_shows_contributions(server_url: str, real_posts: list[str]) -> None:
    sync_api = _require_browser()
    expect = sync_api.expect
    post = next(p for p in real_posts if 20 <= len(p) <= 120)
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
        _predict(s, expect)
        assert s.sent[-1] == {"text": post, "explain": True}
        expect(page.locator("#context-used")).to_have_text("未使用背景 No context used")
        assert page.locator("#context-scores .ctx").count() == 0
        assert page.locator("#context-box").is_hidden()

        assert page.locator("#ctx-followers").is_hidden()  # collapsed until asked for
        page.click("#context summary")
        page.select_option("#ctx-channel", channels[0])
        page.select_option("#ctx-vip", "true")
        page.fill("#ctx-followers", "175")
        page.fill("#ctx-posted-at", "2025-01-06T20:30")
        page.fill("#ctx-history-posts", "25")  # without its median: history is not sent
        _predict(s, expect)
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
        _predict(s, expect)
        assert s.sent[-1]["context"] == {"channel": channels[0], "verified": False, "followers": 175,
                                            "posted_at": "2025-01-06T20:30:00+08:00",
                                            "author_history": {"posts": 25, "median_engagement": 850.5}}
        expect(page.locator("#context-used")).to_contain_text("author_history")

        # A bad value: the API's 422 detail in the status line.
        page.fill("#ctx-followers", "-1")
        _predict(s, expect)
        expect(page.locator("#status")).to_contain_text("422")
        assert "context.followers" in page.inner_text("#status")

        # Cleared: no context key again.
        page.click("#ctx-clear")
        _predict(s, expect)
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
    post = next(p for p in real_posts if 20 <= len(p) <= 120)
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
        _predict(s, expect)
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
            data = route.fetch().json()
            result = data["results"][0]
            result["context"] = {"used": ["channel", "followers", "posted_at"], "unknown": ["vip"],
                                 "notes": [f"note {hostile}", "second note"]}
            result["explanation"]["tier"]["context"] = contributions
            route.fulfill(status=200, content_type="application/json", body=json.dumps(data))

        page.route("**/predict", canned)
        page.fill("#text", "转发抽奖！关注并转发本条微博")
        _predict(s, expect)
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
