"""Property-based bad input over the whole API, against a real gateway.

For every operation of the gateway's own OpenAPI document, hypothesis generates
requests: path parameters (uuids, random text, `..`, `%2F`, unicode, very long),
query parameters per their declared type and junk, bodies from the declared JSON
schema (valid-shaped with random values) and junk (wrong types, huge numbers,
deep nesting, invalid UTF-8, not JSON), odd headers, and no / a bad / a good token.
Every answer must be below 500, every 4xx must carry the one error shape, and no
request may hang.

How it runs under pytest-asyncio: the test starts the gateway and a client session
on its loop, then runs hypothesis's (synchronous) `@given` functions in a worker
thread (`asyncio.to_thread`); each example sends its request on the test's loop with
`asyncio.run_coroutine_threadsafe(...).result()`. Examples are derandomized, so a
run is reproducible in CI.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.config import LoadedConfig
from gateway.config_models import LimitsConfig
from tests.conftest import Gateway, GatewayFactory, config_with

#: Examples per operation; operations with a body get twice as many.
EXAMPLES = 24
REQUEST_TIMEOUT = 10.0
MIN_CASES = 1000

# ------------------------------------------------------------ strategies: scalars

_SPECIAL_TEXT = [
    "",
    " ",
    ".",
    "..",
    "../..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2F",
    "%00",
    "%",
    "local",
    "stdout",
    "0",
    "-1",
    "index.html",
    "~",
    "/etc/passwd",
    "ünïcödé-中文-🚀",
    "\u202e\u0000x",
    "a" * 5000,
    "null",
    "true",
    "9" * 40,
    "1e400",
    "NaN",
]
#: Text that an HTTP header can carry (the client refuses CR, LF and non-latin-1).
_HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=300,
)
_TEXT = st.one_of(st.sampled_from(_SPECIAL_TEXT), st.text(max_size=60))
_HUGE_INTS = st.integers(min_value=-(2**80), max_value=2**80)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    _HUGE_INTS,
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _path_value() -> st.SearchStrategy[str]:
    return st.one_of(
        st.uuids().map(str),
        st.just(str(uuid.UUID(int=1))),
        _TEXT,
        st.text(min_size=1, max_size=40),
        st.text(alphabet="./%2Fa", min_size=1, max_size=20),
        st.integers(min_value=-5, max_value=2**70).map(str),
        st.just("x" * 20_000),
    )


# ------------------------------------------------------------ strategies: from a JSON schema


def from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid-shaped values of a pydantic JSON schema, with a wrong-typed value now and
    then in place of any field (hypothesis-jsonschema does not run on this hypothesis)."""
    return st.one_of(_valid(schema, defs), _valid(schema, defs), _valid(schema, defs), _JSON)


#: (id of the defs, name) -> the strategy of that component, built once: a component
#: used in several places (a job spec alone and in a batch) is not built again.
_COMPONENTS: dict[tuple[int, str], st.SearchStrategy[Any]] = {}


def _valid(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        key = (id(defs), name)
        if key not in _COMPONENTS:
            _COMPONENTS[key] = from_schema(defs[name], defs)
        return _COMPONENTS[key]
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        if not props:
            values = schema.get("additionalProperties", {})
            inner = from_schema(values, defs) if isinstance(values, dict) else _JSON
            return st.dictionaries(st.text(max_size=16), inner, max_size=3)
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs) for k, v in props.items() if k in required},
            optional={k: from_schema(v, defs) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        items = schema.get("items", {})
        return st.lists(
            from_schema(items, defs) if items else _JSON,
            max_size=min(schema.get("maxItems", 3), 3),
        )
    if kind == "string":
        if "pattern" in schema:
            return st.one_of(st.from_regex(schema["pattern"], fullmatch=True), _TEXT)
        high = min(schema.get("maxLength", 60), 60)
        return st.text(min_size=min(schema.get("minLength", 0), high), max_size=high)
    if kind == "integer":
        return st.one_of(
            st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum")),
            _HUGE_INTS,
        )
    if kind == "number":
        return st.floats()
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return _JSON


def _harmless(body: Any) -> Any:
    """A generated job spec runs `true` (no script of random text, no large arrays)."""
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("script", "array")}
        body["command"] = "true"
        if isinstance(body.get("arguments"), list):
            body["arguments"] = body["arguments"][:4]
    return body


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


_JUNK_BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"not json",
            b"{",
            b'{"command": "\xff\xfe"}',
            b"\xff\xfe\x00{",
            b"NaN",
            b"Infinity",
            b"[1e400]",
            b'{"a": 1, "a": 2}',
            b"null",
            b'"a string"',
            b'{"command": "true", "resources": {"nodes": 1e309}}',
            b'{"command": "true", "resources": {"nodes": 100000000000000000000000000}}',
        ]
    ),
    st.integers(min_value=10, max_value=20_000).map(_deep),
    st.integers(min_value=10, max_value=20_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


# ------------------------------------------------------------ a generated request


@dataclass
class Case:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


@dataclass
class Operation:
    name: str
    method: str
    path: str
    params: list[dict[str, Any]]
    body: dict[str, Any] | None  # the requestBody content, when there is one

    @property
    def has_body(self) -> bool:
        return self.body is not None


def operations_of(doc: dict[str, Any]) -> list[Operation]:
    found = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            found.append(
                Operation(
                    op["operationId"],
                    method.upper(),
                    path,
                    op.get("parameters", []),
                    op.get("requestBody", {}).get("content"),
                )
            )
    return found


def _query_value(param: dict[str, Any]) -> st.SearchStrategy[str]:
    schema = param["schema"]
    declared: st.SearchStrategy[str]
    if schema["type"] == "integer":
        declared = st.integers(
            min_value=schema.get("minimum"), max_value=schema.get("maximum")
        ).map(str)
        declared = st.one_of(declared, _HUGE_INTS.map(str))
    elif schema["type"] == "boolean":
        declared = st.sampled_from(["true", "false", "1", "0", "yes", "no", "TRUE", "maybe"])
    elif schema.get("enum"):
        declared = st.sampled_from(schema["enum"])
    else:
        declared = st.one_of(_TEXT, st.sampled_from(["RUNNING", "queued,bogus", "user,center"]))
    return st.one_of(declared, declared, _TEXT)


def _encode(value: str, raw: bool) -> str:
    # `raw` leaves '/', '%' and '.' as they are, so '..' and '%2F' reach the router.
    return quote(value, safe="/%." if raw else "", errors="surrogatepass")


@st.composite
def cases(
    draw: st.DrawFn, op: Operation, base: str, tokens: dict[str, str | None], schemas: dict
) -> Case:
    path = op.path
    for name in re.findall(r"\{([^}/]+)\}", op.path):
        value = draw(st.one_of(st.sampled_from(["local", "stdout", "0"]), _path_value()))
        path = path.replace("{" + name + "}", _encode(value, draw(st.booleans())) or "x")
    query: list[str] = []
    headers: dict[str, str] = {}
    for param in op.params:
        if param["in"] == "path" or not draw(st.booleans()):
            continue
        if param["in"] == "header":
            headers[param["name"]] = draw(st.one_of(_HEADER_TEXT, st.just("a" * 64)))
        else:
            query.append(f"{quote(param['name'])}={_encode(draw(_query_value(param)), False)}")
    if draw(st.integers(0, 4)) == 0:  # an undeclared parameter
        query.append(f"{_encode(draw(_TEXT), False)}={_encode(draw(_TEXT), False)}")
    if draw(st.integers(0, 4)) == 0:  # a repeated one
        query.extend(query[:1])
    url = base + path + ("?" + "&".join(query) if query else "")

    token = tokens[draw(st.sampled_from(["good", "good", "good", "good", "none", "bad"]))]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if draw(st.integers(0, 5)) == 0:
        headers["Idempotency-Key"] = draw(_HEADER_TEXT)

    body: bytes | None = None
    content = op.body or {}
    if "application/json" in content:
        name = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        value = draw(from_schema(schemas[name], schemas))
        if op.name == "jobs.submit":
            value = _harmless(value)
        elif op.name == "jobs.batch" and isinstance(value, dict):
            jobs = value.get("jobs")
            if isinstance(jobs, list):
                value = {**value, "jobs": [_harmless(j) for j in jobs]}
        shaped = json.dumps(value).encode()
        body = draw(st.one_of(st.just(shaped), st.just(shaped), _JUNK_BODIES))
        headers["Content-Type"] = "application/json"
    elif content:
        body = draw(st.binary(max_size=2000))
        headers["Content-Type"] = "application/octet-stream"
    elif draw(st.integers(0, 5)) == 0:
        body = draw(_JUNK_BODIES)
    if body is not None and draw(st.integers(0, 4)) == 0:
        headers["Content-Type"] = draw(
            st.sampled_from(
                [
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "application/json; charset=latin-1",
                    "application/json; charset=nonsense",
                    "nonsense",
                ]
            )
        )
    return Case(op.method, url, headers, body)


# ------------------------------------------------------------ sending and checking


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclass
class Fuzz:
    session: aiohttp.ClientSession
    loop: asyncio.AbstractEventLoop
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def _send(self, case: Case) -> Answer:
        async with self.session.request(
            case.method,
            URL(case.url, encoded=True),
            headers=case.headers,
            data=case.body,
            allow_redirects=False,
        ) as resp:
            streaming = resp.content_type == "text/event-stream" or (
                resp.status < 400 and resp.content_type == "application/octet-stream"
            )
            # A stream (events, `follow`) stays open by design: its status line is the answer.
            body = b"" if streaming else await resp.read()
            return Answer(resp.status, resp.content_type, body)

    def send(self, case: Case) -> Answer:
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self._send(case), REQUEST_TIMEOUT), self.loop
        )
        try:
            answer = future.result(REQUEST_TIMEOUT + 5)
        except TimeoutError:
            raise AssertionError(f"no answer within {REQUEST_TIMEOUT}s") from None
        with self.lock:
            self.sent += 1
            self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
        return answer


def check_answer(case: Case, answer: Answer) -> None:
    assert answer.status < 500, (answer.status, answer.body[:500])
    if answer.status < 400 or case.method == "HEAD":
        return
    assert answer.content_type == "application/json", (answer.status, answer.content_type)
    body = json.loads(answer.body)
    if "/ga4gh/tes/" in case.url:
        # GA4GH's shape: the message and the status, with the gateway's code.
        assert isinstance(body["msg"], str), body
        assert body["status_code"] == answer.status and isinstance(body["code"], str), body
        return
    error = body["error"]
    assert isinstance(error["code"], str), body
    assert isinstance(error["message"], str), body


def run_operation(fuzz: Fuzz, op: Operation, strategy: st.SearchStrategy[Case]) -> None:
    @settings(
        max_examples=EXAMPLES * (2 if op.has_body else 1),
        deadline=None,
        derandomize=True,
        database=None,
        # Shrinking a hanging request would take 10 s an attempt; the example is printed.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def check(case: Case) -> None:
        check_answer(case, fuzz.send(case))

    check()


# ------------------------------------------------------------ the test


@pytest.fixture
async def fuzz_gateway(start_gateway: GatewayFactory, local_config: LoadedConfig) -> Gateway:
    # The run sends far more than a user's usual rate; 429s would hide the handlers.
    limits = LimitsConfig(rate=100_000, burst=100_000)
    config = config_with(local_config, local_config.data_dir, limits=limits)
    return await start_gateway(config, {"fuzz": ("researcher", "admin")})


async def test_every_route_answers_generated_bad_input_below_500_in_the_error_shape(
    fuzz_gateway: Gateway,
) -> None:
    gw = fuzz_gateway
    tokens: dict[str, str | None] = {"good": gw.tokens["fuzz"], "none": None, "bad": "x.y.z"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(gw.url + "/v1/openapi.json") as resp:
            assert resp.status == 200
            doc = await resp.json()
        schemas = doc["components"]["schemas"]
        operations = operations_of(doc)
        assert {op.name for op in operations} >= {"jobs.submit", "files.upload", "openapi"}
        fuzz = Fuzz(session, asyncio.get_running_loop())
        failures: list[str] = []

        def run_all() -> None:
            for op in operations:
                print(f"fuzz: {op.name} ({fuzz.sent} sent)", flush=True)
                strategy = cases(op, gw.url, tokens, schemas)
                try:
                    run_operation(fuzz, op, strategy)
                except Exception as exc:  # collect every route's failure, then report all
                    notes = "\n".join(getattr(exc, "__notes__", []))
                    failures.append(f"{op.method} {op.path} ({op.name}): {exc!r}\n{notes}")

        await asyncio.to_thread(run_all)
    elapsed = time.monotonic() - started
    print(f"fuzz: {fuzz.sent} requests in {elapsed:.1f}s; statuses {sorted(fuzz.statuses.items())}")
    assert not failures, "\n\n".join(failures)
    assert fuzz.sent >= MIN_CASES
