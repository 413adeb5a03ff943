"""Regressions found by tests/integration/test_api_fuzz.py: bad bodies get a 4xx."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.errors import DomainError
from gateway.http.errors import status_of
from gateway.http.params import json_body


@pytest.mark.parametrize(
    "raw", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000]
)
async def test_deeply_nested_json_body_is_a_400_naming_the_body(raw: bytes) -> None:
    request = make_mocked_request("POST", "/v1/jobs")

    async def read() -> bytes:
        return raw

    request.read = read  # type: ignore[method-assign]
    with pytest.raises(DomainError) as caught:
        await json_body(request)
    assert (status_of(caught.value), caught.value.code) == (400, "invalid_json")
    assert caught.value.field == "(body)"
