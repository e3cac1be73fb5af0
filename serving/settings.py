"""Serving configuration, read from SHARELENS_* environment variables (or passed in by tests).

Defaults are the safe ones: listen on localhost only, CORS closed, no API key (so no auth
theatre in development); production sets SHARELENS_HOST, SHARELENS_API_KEY and origins."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHARELENS_", extra="ignore")

    models_dir: Path = Field(REPO / "models", description="models/ folder holding registry.json and bundles")
    model_name: str = Field("sharelens", description="registry name of the model to serve")
    default_ref: str | None = Field(None, description="alias or version served by default "
                                    "(None: production, then latest)")
    max_text_chars: int = Field(2000, ge=1, description="longest accepted text, in characters")
    max_batch: int = Field(64, ge=1, description="most texts in one request")
    max_body_bytes: int = Field(1_000_000, ge=1, description="largest accepted request body")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    explain_steps: int = Field(16, ge=1, le=256, description="Integrated Gradients steps per explanation")
    max_explain_batch: int = Field(16, ge=1, description="most texts one request may ask to explain "
                                   "(each explanation costs explain_steps forward and backward passes)")
    explain_top_k: int = Field(10, ge=1, le=100, description="words returned per explanation")
    cache_size: int = Field(2, ge=1, description="model versions kept loaded at once")
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins (closed by default)")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per process (None: torch's "
                                      "default); set it when several workers share the cores")
    api_key: str | None = Field(None, description="if set, /predict and /models need X-API-Key or a Bearer token")
