"""Property-based fuzzing from the OpenAPI schema (schemathesis): whatever the generated request,
valid per the schema or not, the API answers without a 5xx.

Runs in-process against the ASGI app on the tiny model, with a bounded number of examples per
operation and mode (positive: bodies that fit the schema; negative: bodies that do not), so that
it stays a unit test. Two apps: without a key (the admin endpoints are disabled: 403), and with
one, so that the admin endpoints' own parsing is fuzzed too; the keyed app has a private copy of
the models dir and its own store, so that a generated alias move cannot leak into other tests.

Hypothesis is driven directly from each operation's strategy rather than through
`schemathesis.pytest.from_fixture`: that lazy loader reads `Function._nodeid`, which pytest 9
removed (schemathesis 4.32)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from serving.main import create_app
from serving.settings import Settings
from serving.store import ModelStore

KEY = "fuzz-key"
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _fuzz(schema, headers: dict[str, str] | None = None, path_prefix: str = "/") -> list[str]:
    """Fuzz every operation under `path_prefix`; returns their labels (to check what ran)."""
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(path_prefix):
            continue
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.body else [])
        for mode in modes:

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            check()
        ran.append(operation.label)
    return ran


def test_no_server_errors(app) -> None:
    ran = _fuzz(schemathesis.openapi.from_asgi("/openapi.json", app))
    assert {"POST /predict", "GET /models", "POST /admin/reload", "POST /admin/aliases"} <= set(ran)


def test_no_server_errors_on_admin(private_models_dir) -> None:
    store = ModelStore(private_models_dir)
    store.load_default()
    application = create_app(Settings(models_dir=private_models_dir, api_key=KEY), store)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", application, headers={"X-API-Key": KEY})
        assert _fuzz(schema, {"X-API-Key": KEY}, "/admin/") == ["POST /admin/reload", "POST /admin/aliases"]
    finally:
        application.state.batcher.close(10)


def test_the_schema_describes_the_bodies_the_routes_parse_themselves(client) -> None:
    spec = client.get("/openapi.json").json()
    for path, fields in (("/predict", {"text", "texts", "context", "posts", "explain", "explain_motive",
                                       "explain_method", "model"}),
                         ("/admin/aliases", {"alias", "version"})):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        schema = body["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == fields
        assert schema["additionalProperties"] is False
