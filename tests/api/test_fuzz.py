"""A property-based fuzz run of the whole OpenAPI spec (issue 19): schemathesis generates requests for
every operation of the app's OpenAPI document, valid and invalid ones (its positive and negative
modes, plus its boundary cases), and sends them over a real socket to the live server (PostgreSQL,
Redis, moto S3) with a valid key of a fresh org per operation. No answer may be a 5xx, and every 4xx
must be the error shape of api/errors.py: {"error": {"message", "type", "param", "code"}}.

Bounded and reproducible: at most MAX_EXAMPLES generated requests per operation, derandomized (the
same requests on every run, no example database), a timeout on each request and on the whole test.

Beside the spec as served, two operations the spec cannot describe are added here, test-side only:
each agent tool as `POST /v1/tools/<name>` with its own input schema (the served spec's generic
`/v1/tools/{name}` only takes an object, so random names would never reach a tool), and a JSON body
for the Stripe webhook (it reads raw bytes, so the spec names no body); the webhook runs with Stripe
configured (the local stand-in's secret), and each generated body is also sent correctly signed, so
the event handling behind the signature check is fuzzed too.

Generated requests reach past "no such model" and "no such id": besides each generated request, one
built on it may put a job body on the tiny local LFM2 (tests/conftest.py `tiny_base`) with real
training and validation files of the org, give an upload a valid file, and point a path id or a
tool's `job_id` / `dataset_id` at a real file, job, synthetic dataset or API key of the org. So plans
tokenize and count, creates store and queue jobs, and reports, downloads, cancels, revokes and
rotations run on real rows. The org's rate limits and active-job cap (services/limits.py) are
raised for the run: they would otherwise answer 429 to nearly every heavy call (tests/api/test_limits.py
tests them).

Not fuzzed: /mcp (MCP over streamable HTTP, not in the OpenAPI document; its tools are the ones
fuzzed here) and /healthz. Creates are harmless: a job or synthetic dataset the fuzzer gets through
is queued on this session's own Redis queue (tests/conftest.py), which no worker consumes here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from api.agent.tools import TOOLS, parameters_schema
from api.main import create_app
from tests.api.helpers import jsonl, sentiment_rows
from tests.support.settings_env import settings_env
from tests.support.stripe_standin import shared_standin, sign, stripe_configured

# Generated requests per operation (schemathesis's boundary cases come on top). A longer hunt on
# fresh random seeds: EDGETUNE_FUZZ_EXAMPLES=500 EDGETUNE_FUZZ_RANDOM=1 pytest tests/api/test_fuzz.py
MAX_EXAMPLES = int(os.environ.get("EDGETUNE_FUZZ_EXAMPLES", "40"))
REQUEST_TIMEOUT_S = 60  # one request; a hang fails that example instead of stalling the run
# Set to a path to see what the run reached: a line per request (operation, status, error code, message).
LOG = os.environ.get("EDGETUNE_FUZZ_LOG")
WEBHOOK = "/v1/webhooks/stripe"
TINY_BASE = "test/tiny-lfm2"  # the model id tests/conftest.py `tiny_base` registers
# Placeholders for real objects of the test's org, made the first time an example names one and put
# in before the request is sent (plain characters: a path does not escape them).
FILE, VALIDATION_FILE = "fuzz-training-file", "fuzz-validation-file"
JOB, DATASET, KEY = "fuzz-job", "fuzz-dataset", "fuzz-api-key"
ROWS = jsonl(sentiment_rows(40))  # a valid training file (40 rows: enough for the gate's held-out 20)
# The path parameters and tool arguments that may name one of them.
SEEDED_IDS = {"file_id": FILE, "fine_tuning_job_id": JOB, "job_id": JOB, "dataset_id": DATASET, "key_id": KEY}

# Shaped like a Stripe event (an invoice or a customer in data.object), so the generator reaches
# past the payload check and, signed, the recording of the event.
STRIPE_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "object": {"type": "string", "enum": ["invoice", "customer"]},
        "id": {"type": "string", "minLength": 1},
        "customer": {"type": "string"},
        "status": {"type": "string"},
        "amount_due": {"type": "integer"},
        "amount_paid": {"type": "integer"},
        "currency": {"type": "string"},
        "attempt_count": {"type": "integer"},
        "period_start": {"type": "integer"},
        "period_end": {"type": "integer"},
    },
    "required": ["object", "id"],
}
STRIPE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "object": {"type": "string", "enum": ["event"]},
        "type": {"type": "string", "enum": ["customer.created", "invoice.paid", "invoice.payment_failed"]},
        "created": {"type": "integer", "minimum": 0, "maximum": 2**62},
        "livemode": {"type": "boolean"},
        "data": {"type": "object", "properties": {"object": STRIPE_OBJECT}, "required": ["object"]},
    },
    "required": ["id", "type", "data"],
}


def fuzzed_spec() -> dict[str, Any]:
    spec = create_app().openapi()
    paths = spec["paths"]
    paths[WEBHOOK]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": STRIPE_EVENT}},
    }
    # Uploads are named *.jsonl (the route refuses other names): schemathesis takes a part's filename
    # from its Content-Disposition example.
    multipart = paths["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]
    disposition = {"schema": {"type": "string", "example": 'form-data; name="file"; filename="train.jsonl"'}}
    multipart["encoding"] = {"file": {"headers": {"Content-Disposition": disposition}}}
    generic = paths["/v1/tools/{name}"]["post"]
    for name, tool in TOOLS.items():
        paths[f"/v1/tools/{name}"] = {
            "post": {
                "operationId": f"tool_{name}",
                "summary": f"the {name} agent tool",
                "parameters": [p for p in generic.get("parameters", []) if p["in"] != "path"],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": parameters_schema(tool)}},
                },
                "responses": {"200": {"description": "the tool's output"}},
            }
        }
    return spec


schema = schemathesis.openapi.from_dict(fuzzed_spec())
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=os.environ.get("EDGETUNE_FUZZ_RANDOM") != "1",
    database="none",
)


def _with_seeds(value: dict[str, Any]) -> dict[str, Any]:
    return value | {k: SEEDED_IDS[k] for k in value if k in SEEDED_IDS}


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """A body as generated or, beside it, one that gets further: a job body (it has a `model`) on
    the tiny local base with real files of the org, an upload with a valid file, a tool's `job_id`
    or `dataset_id` naming a real one."""
    path = context.operation.path if context.operation else ""
    if not isinstance(body, dict):
        return st.just(body)
    if "model" in body:
        seeded = {k: v for k, v in body.items() if k != "task"} | {"model": TINY_BASE, "training_file": FILE}
        return st.sampled_from([body, seeded, seeded | {"validation_file": VALIDATION_FILE}])
    if path == "/v1/files":
        return st.sampled_from([body, body | {"file": ROWS, "purpose": "fine-tune"}])
    if path == "/v1/tools/upload_training_file":
        return st.sampled_from([body, {"filename": "train.jsonl", "content": ROWS.decode()}])
    return st.sampled_from([body, _with_seeds(body)]) if set(body) & set(SEEDED_IDS) else st.just(body)


@schema.hook
def flatmap_path_parameters(context: schemathesis.HookContext, params: Any) -> st.SearchStrategy[Any]:
    """Path ids as generated, or naming real objects of the org."""
    if not isinstance(params, dict) or not set(params) & set(SEEDED_IDS):
        return st.just(params)
    return st.sampled_from([params, _with_seeds(params)])


ERROR_KEYS = {"message", "type", "param", "code"}


def problem_with(status: int, content_type: str, text: str) -> str | None:
    """Why this response breaks the rules (a 5xx, or a 4xx not in the error shape); None if it holds."""
    if status >= 500:
        return f"a {status}"
    if status < 400:
        return None
    if not content_type.startswith("application/json"):
        return f"a {status} that is not JSON ({content_type!r})"
    try:
        body = json.loads(text)
    except ValueError:
        return f"a {status} whose body is not JSON"
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f'a {status} whose body is not {{"error": {{...}}}}'
    err = body["error"]
    if not ERROR_KEYS <= set(err):
        return f"a {status} whose error lacks {sorted(ERROR_KEYS - set(err))}"
    if not isinstance(err["message"], str) or not err["message"] or not isinstance(err["type"], str):
        return f"a {status} whose error has no message or type"
    if not all(err[k] is None or isinstance(err[k], str) for k in ("param", "code")):
        return f"a {status} whose error param/code are not strings or null"
    if "Traceback" in text:
        return f"a {status} that shows a traceback"
    return None


# Generous enough that no generated call is refused for rate or count (settings of services/limits.py).
GENEROUS = {
    "EDGETUNE_RATE_LIMIT": "1000000/minute",
    "EDGETUNE_HEAVY_RATE_LIMIT": "1000000/minute",
    "EDGETUNE_MAX_ACTIVE_JOBS": "1000000",
}

# An event stream of a seeded job or dataset (queued, and no worker takes it) never reaches `done`,
# and its keep-alives outpace the request timeout: end each stream at once (its lifetime bound).
SHORT_STREAMS = {"EDGETUNE_EVENT_STREAM_MAX_S": "0.2", "EDGETUNE_EVENT_STREAM_POLL_S": "0.1"}


@pytest.fixture(scope="module", autouse=True)
def generous_limits(platform) -> Iterator[None]:
    with settings_env(GENEROUS | SHORT_STREAMS):
        yield


@pytest.fixture()
def seeds(server, api_key: str) -> Iterator[Callable[[Any], Any]]:
    """Replaces the placeholders in a value with real objects of this test's org, each made the
    first time an example names it: files, a queued job on the tiny base (no worker takes it), a
    queued synthetic dataset and a second API key (so a revoke or a rotation leaves the test's own)."""
    api = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120)
    made: dict[str, str] = {}

    def create(path: str, **kwargs: Any) -> str:
        r = api.post(path, **kwargs)
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def make(name: str) -> str:
        if name in made:
            return made[name]
        if name in (FILE, VALIDATION_FILE):
            rows = ROWS if name == FILE else jsonl(sentiment_rows(24))
            files = {"file": (f"{name}.jsonl", io.BytesIO(rows))}
            made[name] = create("/files", files=files, data={"purpose": "fine-tune"})
        elif name == JOB:
            made[name] = create("/fine_tuning/jobs", json={"model": TINY_BASE, "training_file": make(FILE)})
        elif name == DATASET:
            task = {"description": "Classify the sentiment of a review.", "labels": ["positive", "negative"]}
            made[name] = create("/synthetic_datasets", json={"task": {"type": "classification", **task}})
        else:
            made[name] = create("/api_keys", json={"name": "fuzz"})
        return made[name]

    def replace(node: Any) -> Any:
        if isinstance(node, str) and node in (FILE, VALIDATION_FILE, JOB, DATASET, KEY):
            return make(node)
        if isinstance(node, dict):
            return {k: replace(v) for k, v in node.items()}
        if isinstance(node, list):
            return [replace(v) for v in node]
        return node

    yield replace
    api.close()


def _log(what: str, status: int, text: str) -> None:
    if LOG:
        try:
            err = json.loads(text)["error"]
            code, message = err["code"], err["message"][:120]
        except (ValueError, TypeError, KeyError):
            code = message = ""
        with open(LOG, "a") as fh:
            fh.write(f"{what}\t{status}\t{code}\t{message!r}\n")


def _json_body(case: schemathesis.Case) -> bytes | None:
    """The generated body as bytes, when it is JSON (negative mode may leave it out)."""
    if isinstance(case.body, dict | list | str | int | float | bool) or case.body is None:
        return json.dumps(case.body).encode()
    return None


@pytest.mark.timeout(300)  # per operation; one takes seconds
@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_fuzz_openapi(case: schemathesis.Case, server, api_key: str, tiny_base: str, seeds) -> None:
    # Every call carries a valid key of this test's own org: a generated Authorization header would
    # stop nearly every request at the 401 (tests/api/test_auth.py covers those).
    assert tiny_base == TINY_BASE
    if case.path_parameters:
        case.path_parameters = seeds(case.path_parameters)
    if isinstance(case.body, dict | list):
        case.body = seeds(case.body)
    root = server.base_url.removesuffix("/v1")
    webhook = case.operation.path == WEBHOOK
    configured = stripe_configured(shared_standin().base_url) if webhook else contextlib.nullcontext()
    with configured:
        response = case.call(
            base_url=root, headers={"Authorization": f"Bearer {api_key}"}, timeout=REQUEST_TIMEOUT_S
        )
        _log(f"{case.method} {case.operation.path}", response.status_code, response.text)
        content_type = (response.headers.get("content-type") or [""])[0]
        problem = problem_with(response.status_code, content_type, response.text)
        assert problem is None, (
            f"{case.method} {case.formatted_path} answered {problem}:\n{response.text[:2000]}\n"
            f"reproduce: {case.as_curl_command()}"
        )
        if webhook and case.method == "POST" and (payload := _json_body(case)) is not None:
            signed = server.api.post(
                "/webhooks/stripe",
                content=payload,
                headers={"Stripe-Signature": sign(payload), "Content-Type": "application/json"},
            )
            _log(f"{case.method} {case.operation.path} (signed)", signed.status_code, signed.text)
            problem = problem_with(signed.status_code, signed.headers.get("content-type", ""), signed.text)
            assert problem is None, f"a signed webhook {payload[:2000]!r} answered {problem}:\n{signed.text}"
