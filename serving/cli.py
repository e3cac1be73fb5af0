"""`sharelens-serve`: run the API, or ask the model about one post from the terminal.

    sharelens-serve serve [--host H] [--port P] [--workers N] [--models-dir D]
    sharelens-serve predict "转发抽奖！..." [--explain] [--model production]
        [--channel 明星] [--vip true] [--verified false] [--followers 175]
        [--posted-at 2025-01-06T20:30] [--history-posts 25 --history-median 850]

`predict` goes through the same checks and the same `service.predict` as the API, so what the
terminal shows is what the API would answer. Errors print one line `Error E4xx: ...` on stderr
and exit with status 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

from serving import errors
from serving.schemas import PredictResponse, PredictResult
from serving.settings import Settings
from sharelens.errors import SharelensError

BAR = 24


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _pad(s: str, width: int) -> str:
    return s + " " * max(0, width - _width(s))


def _bar(p: float) -> str:
    full = round(p * BAR)
    return "█" * full + "·" * (BAR - full)


def render(response: PredictResponse, result: PredictResult) -> str:
    """A readable answer: motive bars with Chinese names, the tier, the top words, truncation."""
    lines = [f"model {response.model.name} {response.model.version}"
             f" ({'calibrated' if result.calibrated else 'uncalibrated'} probabilities)", "", "Share motive:"]
    for mp in result.motive.probabilities:
        mark = "▶" if mp.motive == result.motive.top else " "
        lines.append(f" {mark} {_pad(mp.zh, 9)}{_pad(mp.motive, 21)}{_bar(mp.probability)} {mp.probability:6.1%}")
    tiers = "  ".join(f"{tp.tier} {tp.probability:.0%}" for tp in result.tier.probabilities)
    lines += ["", f"Engagement tier: {result.tier.top}   ({tiers})",
              f"Context used: {', '.join(result.context.used) or 'none (text only)'}"]
    lines += [f"  note: {n}" for n in result.context.notes]
    if result.explanation is not None:
        for label, ex in (("motive " + result.motive.top_zh, result.explanation.motive),
                          ("tier, + = towards higher tiers", result.explanation.tier)):
            words = "  ".join(f"{w.word}({w.score:+.3f})" for w in ex.words) or "(none)"
            lines.append(f"Top words ({label}): {words}")
        if result.explanation.tier.context:
            ctx = "  ".join(f"{c.field}={c.value} {c.score:+.2f}" for c in result.explanation.tier.context)
            lines.append(f"Context (tier, + = towards higher tiers): {ctx}")
    if result.truncated:
        lines += ["", f"Note: the text has {result.n_tokens} tokens, more than the model window of "
                  f"{result.window_tokens}; only the first {result.window_tokens} were read."]
    return "\n".join(lines)


def _predict(args: argparse.Namespace) -> int:
    from serving import parsing, service
    from serving.explain import Explainer
    from serving.store import ModelStore, loader_for

    # The one-line error below says it all; keep library log records off the terminal.
    logging.getLogger("sharelens").addHandler(logging.NullHandler())
    settings = Settings(**({"models_dir": args.models_dir} if args.models_dir else {}))
    req = parsing.to_request({"text": args.text, "explain": args.explain, "model": args.model,
                              "context": _context_arguments(args)})
    posts = parsing.check_request(req, settings)
    store = ModelStore(settings.models_dir, settings.model_name, settings.default_ref,
                       loader=loader_for(settings.backend, settings.runtime,
                                                   settings.resolved_torch_threads()))
    explainer = Explainer(settings.explain_steps, settings.explain_top_k)
    response = service.predict(store, posts, explainer, explain=req.explain, model=req.model)
    print(render(response, response.results[0]))
    return 0


def _flag(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise SharelensError("E441", errors.CLI_BOOLEAN.format(name=name, value=repr(value)))


def _context_arguments(args: argparse.Namespace) -> dict | None:
    """The context options as the API's `context` object (None when none is given); checked by
    the same code as the API's."""
    if (args.history_posts is None) != (args.history_median is None):
        raise SharelensError("E442", errors.CLI_HISTORY_PAIR)
    ctx = {"channel": args.channel, "vip": _flag(args.vip, "vip"), "verified": _flag(args.verified, "verified"),
           "followers": args.followers, "posted_at": args.posted_at,
           "author_history": None if args.history_posts is None else
           {"posts": args.history_posts, "median_engagement": args.history_median}}
    ctx = {k: v for k, v in ctx.items() if v is not None}
    return ctx or None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from serving.metrics import multiprocess_dir

    # Environment, not arguments: with --workers > 1 every worker builds its own app from it.
    for key, value in (("HOST", args.host), ("PORT", args.port), ("WORKERS", args.workers),
                       ("MODELS_DIR", args.models_dir)):
        if value is not None:
            os.environ[f"SHARELENS_{key}"] = str(value)
    settings = Settings()
    os.environ["SHARELENS_HEADER_TIMEOUT_S"] = str(settings.header_timeout_s)  # checked, for serving.protocol
    _exit_quietly_after_drain()
    # Before uvicorn starts (spawns) the workers, so that they import prometheus_client with it.
    with multiprocess_dir(settings.workers):
        uvicorn.run(APP, **uvicorn_options(settings))
    return 0


APP = "serving.main:app_factory"
HTTP_PROTOCOL = "serving.protocol:HeadTimeoutH11Protocol"  # h11, plus a deadline for the request head


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How `serve` runs uvicorn (tests build a `uvicorn.Config` from these without starting it).

    Its defaults bound nothing: any number of connections, request heads of any size with
    httptools (1 MiB went through), and 30 s + 30 s to stop. Here:
    - http="h11": h11_max_incomplete_event_size is h11's; httptools, which uvicorn picks when it is
      installed, has no limit on the request head. Measured (2026-11-30, int8 lean, 200 sequential
      single-post /predict requests, twice each, alternating): h11 p50 28.0 / 26.9 ms, httptools
      27.4 / 26.5 ms: the parser is not what a request costs here;
    - limit_concurrency: beyond it uvicorn answers 503 before the app, so a connection flood costs
      sockets, not model time (the app's own queues answer 429 well below it);
    - timeout_keep_alive: idle keep-alive connections close. uvicorn has no timer for a request
      head still arriving: serving.protocol (h11 with a head deadline, SHARELENS_HEADER_TIMEOUT_S,
      read by each worker from the environment) closes a connection whose head is not in within
      it; the body has its own timeout (SHARELENS_BODY_TIMEOUT_S, serving.parsing);
    - timeout_graceful_shutdown: the whole shutdown budget; the drain after it gets what is left
      (serving.shutdown), so SIGTERM to exit stays within SHARELENS_SHUTDOWN_TIMEOUT_S."""
    return {"factory": True, "host": settings.host, "port": settings.port, "workers": settings.workers,
            "proxy_headers": False, "http": HTTP_PROTOCOL, "h11_max_incomplete_event_size": settings.max_header_bytes,
            "limit_concurrency": settings.max_connections, "timeout_keep_alive": settings.keep_alive_timeout_s,
            "timeout_graceful_shutdown": settings.shutdown_timeout_s}


def _exit_quietly_after_drain() -> None:
    """SIGTERM / SIGINT end the server with status 0 once it has drained.

    uvicorn catches the signal, stops accepting, lets in-flight requests finish (at most
    shutdown_timeout_s) and runs the lifespan shutdown (the batcher drains in what is left of
    that budget, see serving.shutdown); then it re-raises the
    signal to the handler that was installed before it started. With the default handler that
    kills the process (status -15), so an orchestrator, or a test, cannot tell a clean stop from
    a crash. These handlers make the re-raised signal a no-op: `main` returns 0."""
    import signal

    def drained(signum: int, frame: object) -> None:
        logging.getLogger("sharelens.serving").info("stopped on %s after draining", signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, drained)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sharelens-serve", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("serve", help="run the HTTP API and the page")
    sp.add_argument("--host")
    sp.add_argument("--port", type=int)
    sp.add_argument("--workers", type=int)
    sp.add_argument("--models-dir")
    pp = sub.add_parser("predict", help="share motive and tier of one post")
    pp.add_argument("text")
    pp.add_argument("--explain", action="store_true", help="also show the words behind the prediction")
    pp.add_argument("--model", help="alias or version (default: production, then latest)")
    pp.add_argument("--models-dir")
    ctx = pp.add_argument_group("context (optional; for the engagement tier)")
    ctx.add_argument("--channel", help="Weibo feed/section, e.g. 明星 (GET /models lists the known ones)")
    ctx.add_argument("--vip", help="the account's Weibo V+ flag (paid fan subscription; `isVip` in feed crawls): true or false")
    ctx.add_argument("--verified", help="account verified: true or false")
    ctx.add_argument("--followers", type=int, help="the account's follower count")
    ctx.add_argument("--posted-at", help="ISO 8601 date or date-time (China time if no zone)")
    ctx.add_argument("--history-posts", type=int, help="number of the author's earlier posts")
    ctx.add_argument("--history-median", type=float, help="their median engagement")
    args = ap.parse_args(argv)
    try:
        return _predict(args) if args.command == "predict" else _serve(args)
    except SharelensError as exc:
        # The API hides a deployment problem behind "see the server log"; here the user is the operator.
        shown = exc.__cause__ if isinstance(exc.__cause__, SharelensError) else exc
        print(str(shown).splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
