"""Defects found by a hostile-but-fair client (issue 9), each with its test: the API documents
behind the token, JSON that made json.loads raise something else than a decode error, and a
huge model id echoed back and logged in full."""

from __future__ import annotations

import logging

import httpx
import pytest

from imagine.errors import InvalidRequest
from imagine.protocols import replicate
from imagine.settings import Settings, hash_token
from tests.http.conftest import MakeClient

TOKEN = "docs-token"


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
async def test_documents_need_the_token_when_tokens_are_on(
    make_client: MakeClient, path: str
) -> None:
    client = make_client(settings=Settings(preload=[], token_hashes=[hash_token(TOKEN)]))
    denied = await client.get(path)
    assert denied.status_code == 401 and "error" in denied.json()
    allowed = await client.get(path, headers={"authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200
    open_client = make_client(settings=Settings(preload=[]))
    assert (await open_client.get(path)).status_code == 200  # no tokens: open, as before
    off = make_client(settings=Settings(preload=[], docs=False))
    assert (await off.get(path)).status_code == 404


async def test_the_document_lists_the_job_routes(make_client: MakeClient) -> None:
    paths = (await make_client().get("/openapi.json")).json()["paths"]
    assert "/v1/predictions" in paths and "/v1/predictions/{job_id}/cancel" in paths


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        (b'{"inputs": "x", "parameters": {"seed": ' + b"9" * 5000 + b"}}", "not acceptable"),
    ],
)
async def test_hostile_json_is_a_400(client: httpx.AsyncClient, body: bytes, needle: str) -> None:
    r = await client.post(
        "/models/org/model", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    with pytest.raises(InvalidRequest, match=needle) as exc:  # the job API's parser too
        replicate.parse_create(body, model_id="org/model")
    assert exc.value.field == "body"


async def test_a_huge_model_id_is_cut_short(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    model_id = "org/" + "m" * 20_000  # httpx refuses URLs much longer
    with caplog.at_level(logging.INFO):
        r = await client.post(f"/models/{model_id}", json={"inputs": "x"})
    assert r.status_code == 404 and len(r.content) < 300
    assert "20004 characters" in r.json()["error"]
    server_records = [r for r in caplog.records if not r.name.startswith("httpx")]  # not ours
    assert all(len(record.getMessage()) < 4096 for record in server_records)


async def test_a_body_over_the_limit_is_a_413(make_client: MakeClient) -> None:
    client = make_client(settings=Settings(preload=[], max_body_bytes=1000))
    body = b'{"inputs": "' + b"a" * 2000 + b'"}'
    r = await client.post("/models/org/model", content=body)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]
    assert r.headers["x-request-id"]  # still through the request-id middleware
    ok = await client.post("/models/org/model", json={"inputs": "a cube", "parameters": {}})
    assert ok.status_code == 200


async def test_a_chunked_body_over_the_limit_is_a_413_too(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(settings=Settings(preload=[], max_body_bytes=1000))

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"inputs": "'
        for _ in range(100):
            yield b"a" * 100
        yield b'"}'

    r = await client.post("/models/org/model", content=chunks())
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no 500 traceback
