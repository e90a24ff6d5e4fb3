"""/health and /metrics over the ASGI app with a fake engine: every generation outcome counted
by status, unresolved model ids folded into one label, tokens, and no metrics → 404."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from imagine.cache.memory import MemoryCache
from imagine.errors import GenerationFailed, ModelLoading, Overloaded
from imagine.metrics import Metrics
from imagine.settings import Settings, hash_token
from tests.http.conftest import MakeClient
from tests.http.fakes import FakeEngine

BODY = {"inputs": "a red cube", "parameters": {"seed": 7}}
TOKEN = "s3cret-metrics-token"


async def scrape(client: httpx.AsyncClient, **kwargs: object) -> dict[tuple[str, str], float]:
    """`imagine_requests_total` samples by (model, status)."""
    r = await client.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.labels["model"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == "imagine_requests_total"
    }


async def test_metrics_404_when_the_engine_keeps_none(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 404
    assert list(r.json()) == ["error"] and "metrics are off" in r.json()["error"]


async def test_every_generation_outcome_is_counted(
    make_client: MakeClient, engine: FakeEngine
) -> None:
    engine.metrics = Metrics()
    client = make_client(cache=MemoryCache(max_bytes=10_000_000, ttl_s=60))
    assert await scrape(client) == {}
    await client.post("/models/org/model", json=BODY)  # 200, miss
    await client.post("/models/org/model", json=BODY)  # 200, hit
    await client.post("/", json=BODY)  # the default model
    bad = {"inputs": "x", "parameters": {"scheduler": "Nope"}}
    assert (await client.post("/models/org/model", json=bad)).status_code == 400
    for error in (
        Overloaded("full", retry_after=1.0),
        ModelLoading("org/model", estimated_time=3.0),
        GenerationFailed("boom"),
        RuntimeError("a bug"),
    ):
        engine.error = error
        await client.post("/models/org/model", json={"inputs": "fresh"})
    engine.error = None
    # never resolved: an unknown id and a malformed body share one label
    assert (await client.post("/models/made/up", json=BODY)).status_code == 404
    broken = await client.post("/models/org/model", content=b"{not json")
    assert broken.status_code == 400
    assert await scrape(client) == {
        ("org/model", "200"): 2.0,
        ("imagine/shapes", "200"): 1.0,
        ("org/model", "400"): 1.0,
        ("org/model", "429"): 1.0,
        ("org/model", "503"): 1.0,
        ("org/model", "500"): 2.0,
        ("unknown", "404"): 1.0,
        ("unknown", "400"): 1.0,
    }
    # GETs are not generation requests
    await client.get("/models/org/model")
    await client.get("/health")
    assert sum((await scrape(client)).values()) == 10.0


async def test_metrics_need_the_token_health_does_not(
    make_client: MakeClient, engine: FakeEngine
) -> None:
    engine.metrics = Metrics()
    client = make_client(settings=Settings(token_hashes=[hash_token(TOKEN)]))
    denied = await client.get("/metrics")
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    assert (await client.post("/models/org/model", json=BODY)).status_code == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert await scrape(client, headers=auth) == {("unknown", "401"): 1.0}
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["auth"] is True


async def test_health_reports_each_models_state(client: httpx.AsyncClient) -> None:
    body = (await client.get("/health")).json()
    assert body["status"] == "ok" and body["auth"] is False
    assert body["engine"]["models"] == {
        "org/model": {"state": "ready"},
        "imagine/shapes": {"state": "ready"},
    }
