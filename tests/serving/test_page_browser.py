"""The page in a real browser: paste a post, click Predict, see ten motive bars and highlighted words.

Needs Debian's /usr/bin/chromium and the `playwright` Python package (no downloaded browsers)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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
