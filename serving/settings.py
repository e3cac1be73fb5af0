"""Serving configuration, read from SHARELENS_* environment variables (or passed in by tests).

Defaults are the safe ones: listen on localhost only, CORS closed, no API key (so no auth
theatre in development, and the admin endpoints stay disabled); production sets SHARELENS_HOST,
SHARELENS_API_KEY and origins.

The batching and overload defaults follow text-embeddings-inference: a few milliseconds of
batching window cost little latency and buy most of the batch throughput, and a bounded queue
answers 429 at once instead of letting every client time out together."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sharelens.explain import DEFAULT_METHOD, METHODS, OCCLUSION_MAX_SPANS
from sharelens.paths import REPO_ROOT


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHARELENS_", extra="ignore")

    models_dir: Path = Field(REPO_ROOT / "models", description="models/ folder holding registry.json and bundles")
    model_name: str = Field("sharelens", description="registry name of the model to serve")
    default_ref: str | None = Field(None, description="alias or version served by default "
                                    "(None: production, then latest)")
    backend: Literal["fp32", "int8"] = Field(
        "fp32", description="inference path: fp32 eager, or the int8 export stored beside the bundle "
        "(`make quantize VERSION=...`; within 0.5 macro-F1 points of fp32 on the held-out test)")
    runtime: Literal["auto", "lean", "transformers", "onnxruntime"] = Field(
        "auto", description="how bundles are built: lean (plain torch + tokenizers, seconds faster to start, "
        "identical outputs), transformers (as trained), auto (lean for plain BERT bundles), onnxruntime (the "
        "bundle exported to ONNX once, into its onnx/ folder, and run by ONNX Runtime; needs the `bench` extra)")
    max_text_chars: int = Field(2000, ge=1, description="longest accepted text, in characters")
    max_batch: int = Field(64, ge=1, description="most texts in one request")
    max_body_bytes: int = Field(1_000_000, ge=1, description="largest accepted request body")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="server processes (uvicorn workers); with more than one, /metrics "
                         "aggregates all of them (Prometheus multiprocess mode) and each follows the registry")
    registry_poll_s: float = Field(2.0, ge=0, description="how often each server process checks registry.json "
                                   "(a stat; the file is read only when it changed): when the default alias now "
                                   "names another version, it is loaded, warmed and swapped in as by /admin/reload "
                                   "(a version that cannot be loaded is refused and the old model keeps serving), "
                                   "so that a promotion reaches every worker within this time; 0 turns it off")
    explain_steps: int = Field(16, ge=1, le=256, description="Integrated Gradients steps per explanation")
    max_explain_batch: int = Field(16, ge=1, description="most texts one request may ask to explain "
                                   "(each explanation costs explain_steps forward and backward passes)")
    explain_threads: int | None = Field(None, ge=1, description="torch intra-op threads of a thread while it "
                                        "explains (None: the usable cores shared out over worker processes)")
    explain_top_k: int = Field(10, ge=1, le=100, description="words returned per explanation")
    explain_method: Literal[METHODS] = Field(  # type: ignore[valid-type]
        DEFAULT_METHOD, description="explanation method when a request names none (the faithfulness and latency "
        "of each: `make bench`'s explanation table)")
    explain_max_words: int = Field(
        OCCLUSION_MAX_SPANS, ge=0, description="occlusion scores at most this many spans: a longer post is cut "
        "into this many runs of neighbouring words, each left out as one (0: every word alone, slower on long "
        "posts)")
    explain_deadline_s: float = Field(10.0, gt=0, description="longest an explain request may wait for a slot and "
                                      "run; past it the work stops at its next post and the answer is 503 with "
                                      "Retry-After")
    explain_client_rate: float = Field(4.0, ge=0, description="explained texts per second one client (its API key, "
                                       "else its address) may ask for on average; 0 turns the share off")
    explain_client_burst: int = Field(16, ge=1, description="explained texts one client may ask for at once "
                                      "before its rate applies")
    cache_size: int = Field(3, ge=1, le=8, description="model versions kept loaded at once, least recently used "
                            "out first (the default version never): a client comparing the default, a canary and an "
                            "old version must not pay a load and its sha256 on every request. Each costs its weights "
                            "in memory (about 0.45 GB for a BERT-base fp32 bundle), hence the cap")
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins (closed by default)")
    model_threads: int | None = Field(None, ge=1, description="threads running model calls side by side "
                                      "(None: the usable CPU cores shared out over the server's worker processes)")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads of each model call (None: "
                                      "cores / model_threads, at least 1); process-wide")
    api_key: str | None = Field(None, description="if set, everything but /, /healthz, /readyz and /static "
                                "needs X-API-Key or a Bearer token; the admin endpoints need it always")
    batch_window_ms: float = Field(5.0, ge=0, le=1000, description="how long the first queued /predict waits "
                                   "for others to share its model call")
    batch_max_tokens: int = Field(8192, ge=1, description="most tokenizer tokens in one batch of the batcher "
                                  "(summed over its texts), and most padded tokens in one model call")
    batch_pad_slack: int = Field(16, ge=0, description="most padding tokens a text may carry in a shared model "
                                 "call; larger on a GPU, where padding is nearly free")
    batch_max_texts: int = Field(64, ge=1, description="most texts in one model call of the batcher")
    max_queue: int = Field(256, ge=1, description="texts admitted to the batcher and not yet answered; "
                           "beyond it /predict answers 429")
    max_explain_queue: int = Field(32, ge=1, description="texts being explained at once; beyond it "
                                   "explain requests answer 429")
    retry_after_s: int = Field(1, ge=0, description="Retry-After of a 429, in seconds")
    shutdown_timeout_s: int = Field(20, ge=1, description="on SIGTERM, the whole time to exit: in-flight "
                                    "requests may finish within it (then they are cut), and the batcher's drain "
                                    "gets what they left; explanations still running stop at their next post")
    header_timeout_s: float = Field(10, gt=0, description="longest a request head (request line and headers) "
                                    "may take to arrive after the connection opens or the previous answer; then the "
                                    "connection is closed (serving.protocol)")
    body_timeout_s: float = Field(15, gt=0, description="longest a request body may take to arrive (408 after)")
    max_connections: int = Field(512, ge=1, description="connections (or requests in progress) one server "
                                 "process accepts at once; beyond it uvicorn answers 503 (its limit_concurrency)")
    keep_alive_timeout_s: int = Field(5, ge=1, description="how long an idle keep-alive connection stays open")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="largest request head (request line and "
                                  "headers) accepted; a larger one is refused before any app code runs")

    def cores_per_process(self) -> int:
        return max(1, usable_cores() // self.workers)

    def resolved_model_threads(self) -> int:
        return self.model_threads or self.cores_per_process()

    def resolved_explain_threads(self) -> int:
        return self.explain_threads or self.cores_per_process()

    def resolved_explain_slots(self) -> int:
        """Requests explaining at once: as many as the cores hold at explain_threads each."""
        return max(1, self.cores_per_process() // self.resolved_explain_threads())

    def resolved_torch_threads(self) -> int:
        return self.torch_threads or max(1, self.cores_per_process() // self.resolved_model_threads())
