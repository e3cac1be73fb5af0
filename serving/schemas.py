"""Request and response bodies of the API. The Field descriptions and examples are what /docs
shows, so they are written for a client developer, not for us."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sharelens.explain import METHODS
from sharelens.labels import MOTIVES, TIERS

_EXAMPLE_POST = "转发抽奖！关注@小明 并转发本条微博，周五抽3位送蓝牙耳机 #抽奖#"


class AuthorHistoryIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    posts: int = Field(ge=0, description="How many earlier posts of the same author are known.", examples=[25])
    median_engagement: float = Field(ge=0, allow_inf_nan=False, description="Their median engagement E "
                                     "(reposts + comments + likes).", examples=[850])


class ContextIn(BaseModel):
    """What the caller knows around the post; every field is optional, and a missing field is
    unknown to the model (never read as zero). Only the engagement tier uses it."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [
        {"channel": "明星", "vip": True, "posted_at": "2025-01-06T20:30:00+08:00",
         "author_history": {"posts": 25, "median_engagement": 850}},
        {"followers": 175, "verified": False},
    ]})

    channel: str | None = Field(None, max_length=64, description="The Weibo feed/section the post appears in "
                                "(热门, 榜单, 社会, 财经, 明星, …). The served model knows the channels of its training "
                                "data (GET /models lists them); another channel is treated as unknown and the "
                                "result says so.", examples=["明星"])
    vip: bool | None = Field(None, description="The account's Weibo V+ flag (`v_plus`: the blogger offers a paid fan "
                             "subscription; `isVip` in feed crawls; not 会员 membership, not verification).",
                             examples=[True])
    verified: bool | None = Field(None, description="Whether the account is verified (认证).", examples=[False])
    followers: int | None = Field(None, ge=0, description="The account's follower count.", examples=[175])
    posted_at: str | None = Field(None, max_length=64, description="When the post is (or was) published, ISO 8601: "
                                  "a date, or a date-time; China time (+08:00) when no zone is given. The model "
                                  "reads the weekday and the hour.", examples=["2025-01-06T20:30:00+08:00"])
    author_history: AuthorHistoryIn | None = Field(None, description="The same author's earlier posts: how many, "
                                                   "and their median engagement.")


class PostIn(BaseModel):
    """A post: its text and, optionally, its context."""

    model_config = ConfigDict(strict=True, extra="forbid")

    text: str = Field(description="The raw post, as typed.", examples=["求扩散！寻找走失老人"])
    context: ContextIn | None = Field(None, description="Optional context for the engagement tier.")


class PredictRequest(BaseModel):
    """One post (`text`, optionally with `context`) or a batch (`texts`, or `posts` with context):
    exactly one of `text`, `texts` and `posts`."""

    # strict: a JSON number is not silently turned into a string, nor "yes" into true;
    # forbid: a misspelt option ("explian") is an error, not a silent default.
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [
        {"text": _EXAMPLE_POST, "explain": True},
        {"texts": [_EXAMPLE_POST, "暴雨预警：今晚到明天有大暴雨，请大家注意出行安全，转给身边的人"]},
        {"text": _EXAMPLE_POST, "explain": True, "explain_motive": "incentive", "model": "production"},
        {"text": _EXAMPLE_POST, "context": {"channel": "明星", "vip": True, "posted_at": "2025-01-06T20:30:00+08:00"}},
        {"posts": [{"text": _EXAMPLE_POST, "context": {"followers": 175}}, {"text": "求扩散！寻找走失老人"}]},
    ]})

    text: str | None = Field(None, description="The raw post, as typed (emoji codes, #话题#, links allowed).",
                             examples=[_EXAMPLE_POST])
    texts: list[str] | None = Field(None, description="A batch of raw posts (at most `max_batch`).",
                                    examples=[[_EXAMPLE_POST, "求扩散！寻找走失老人"]])
    context: ContextIn | None = Field(None, description="Context of the one post in `text` (for the "
                                      "engagement tier); with a batch, give `posts` instead.")
    posts: list[PostIn] | None = Field(None, description="A batch of posts, each with its own optional context "
                                       "(at most `max_batch`).")
    explain: bool = Field(False, description="Also return the words that drove each prediction "
                          "(slower: see `explain_method`).")
    explain_method: str | None = Field(
        None, description="How to explain: `occlusion` (leave one word out and re-score; the default), "
        "`integrated_gradients` (slower; scores sum to the output's change), `gradient_x_input` (fastest, "
        "least faithful). Default: the server's SHARELENS_EXPLAIN_METHOD.",
        json_schema_extra={"enum": list(METHODS)}, examples=["occlusion"])
    explain_motive: str | None = Field(
        None, description="Motive to explain (default: each text's top motive).",
        json_schema_extra={"enum": list(MOTIVES)}, examples=["incentive"])
    model: str | None = Field(None, description="Model alias (e.g. `production`, `latest`) or version "
                              "(`v0003-20261123`); default: production, then latest.",
                              examples=["production"])


class ModelRef(BaseModel):
    name: str = Field(description="Registry name of the model.", examples=["sharelens"])
    version: str = Field(description="Exact version that answered.", examples=["v0003-20261123"])


class MotiveProbability(BaseModel):
    motive: Literal[MOTIVES] = Field(description="Motive id (see the label spec).")  # type: ignore[valid-type]
    zh: str = Field(description="Chinese name of the motive.", examples=["利益驱动"])
    probability: float = Field(ge=0, le=1)


class MotiveResult(BaseModel):
    top: Literal[MOTIVES] = Field(description="The most probable share motive.")  # type: ignore[valid-type]
    top_zh: str = Field(description="Its Chinese name.", examples=["利益驱动"])
    probabilities: list[MotiveProbability] = Field(description="All ten motives, most probable first; "
                                                   "they sum to 1.")


class TierProbability(BaseModel):
    tier: Literal[TIERS] = Field(description="Engagement tier id.")  # type: ignore[valid-type]
    probability: float = Field(ge=0, le=1)


class TierResult(BaseModel):
    top: Literal[TIERS] = Field(  # type: ignore[valid-type]
        description="The predicted engagement tier: the median of the distribution below (the lowest tier whose "
        "cumulative probability reaches 0.5), which minimises the expected distance to the true tier; it can "
        "differ from the single most probable tier.")
    probabilities: list[TierProbability] = Field(description="The four tiers in order low, medium, high, "
                                                 "viral; they sum to 1.")


class WordScore(BaseModel):
    word: str = Field(description="The word exactly as it appears in the text sent: text[start:end].",
                      examples=["抽奖"])
    start: int = Field(ge=0, description="Start offset in the original text, in Unicode code points "
                       "(Python str indices; in JavaScript index `Array.from(text)`, not the UTF-16 string).")
    end: int = Field(ge=0, description="End offset (exclusive) in the original text, in code points.")
    score: float = Field(description="Attribution: positive pushes the prediction up, negative down.")


class ContextScore(BaseModel):
    field: str = Field(description="A context field the tier head read.", examples=["channel"])
    value: str = Field(description="Its value as given, shown for reading.", examples=["明星"])
    score: float = Field(description="Change in the expected tier (0 = low .. 3 = viral) that this field "
                         "brings: the prediction with it minus the prediction with it unknown.")


class TargetExplanation(BaseModel):
    target: str = Field(description="What is explained: a motive id, or the predicted tier.",
                        examples=["incentive"])
    objective: str = Field(description="The model output the scores are a share of.")
    words: list[WordScore] = Field(description="The most influential words, largest |score| first.")
    context: list[ContextScore] = Field(default_factory=list, description="Tier only: each known context "
                                        "field's contribution, largest |score| first.")


class ContextUse(BaseModel):
    used: list[str] = Field(description="Context fields the tier head read.", examples=[["channel", "vip"]])
    unknown: list[str] = Field(description="Fields it did not have, or could not use (see `notes`).",
                               examples=[["verified", "followers", "posted_at", "author_history"]])
    notes: list[str] = Field(default_factory=list, description="Why a given field was not (fully) used, "
                             "e.g. a channel unseen in training.")


class Explanation(BaseModel):
    method: Literal[METHODS] = Field(description="How the scores were computed.")  # type: ignore[valid-type]
    score_meaning: str = Field(description="What one word's score means under this method.")
    motive: TargetExplanation
    tier: TargetExplanation = Field(description="Scores for the expected tier: positive pushes the post "
                                    "towards higher tiers.")


class PredictResult(BaseModel):
    motive: MotiveResult
    tier: TierResult
    calibrated: bool = Field(description="Whether the probabilities use temperatures fitted on held-out data.")
    n_tokens: int = Field(description="Tokens in the whole text, special tokens included.")
    truncated: bool = Field(description="True when the text is longer than the model window: only the "
                            "first `window_tokens` tokens were read.")
    window_tokens: int = Field(description="The model window (max tokens read).", examples=[256])
    context: ContextUse = Field(description="Which context fields the tier prediction used.")
    explanation: Explanation | None = Field(None, description="Present when `explain` was true.")


class PredictResponse(BaseModel):
    model: ModelRef
    results: list[PredictResult] = Field(description="One result per input post, in input order.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    model: ModelRef
    backend: str | None = Field(None, description="inference path of the default model: fp32 or int8")
    runtime: str | None = Field(None, description="how it was built: lean (plain torch) or transformers")


class VersionInfo(BaseModel):
    version: str
    created_at: str | None = None
    summary: dict = Field(default_factory=dict, description="Headline metrics recorded at training time.")


class ModelsResponse(BaseModel):
    name: str
    serving: str | None = Field(description="Version answering requests that name no model.")
    aliases: dict[str, str] = Field(description="Alias -> version.", examples=[{"production": "v0003-20261123"}])
    versions: list[VersionInfo]
    loaded: list[str] = Field(description="Versions currently held in memory.")
    channels: list[str] = Field(default_factory=list, description="Channels the serving model knows (context "
                                "`channel`); empty for a text-only model.")


class ErrorBody(BaseModel):
    detail: str = Field(description="One sentence saying what is wrong.", examples=["text must not be empty or "
                                                                                   "whitespace"])
    code: str = Field(description="What went wrong, for programs to match on: one code per failure "
                      "(the README lists them all).", examples=["E401"])


class AliasRequest(BaseModel):
    """Move an alias to a version, then reload the default model."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [
        {"alias": "production", "version": "v0002-20261124"}]})

    alias: str = Field(description="Alias to move: lowercase letters, digits, - or _ (not shaped like a "
                       "version).", examples=["production"], max_length=64)
    version: str = Field(description="Exact registered version `v<NNNN>-<YYYYMMDD>`.",
                         examples=["v0002-20261124"], max_length=64)


class ReloadResponse(BaseModel):
    status: Literal["reloaded"] = "reloaded"
    model: ModelRef = Field(description="The version that answers requests naming no model, from now on.")
    previous: str | None = Field(description="The version that answered them before.")
    seconds: float = Field(description="Time to load, warm and swap in the model.")
    alias: str | None = Field(None, description="The alias moved (POST /admin/aliases only).")
