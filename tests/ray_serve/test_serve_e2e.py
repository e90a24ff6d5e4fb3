"""imagine on Ray Serve, end to end: `imagine serve --ray` started here (its own Ray instance,
loopback only) with two ingress and two model replicas, a real redis-server for the result
cache and the job store, and the real HF, replicate and openai clients.

Serve's proxy sends each request to either ingress replica, so a job is often created on one and
streamed, cancelled or polled on the other (imagine.jobs.relay carries its progress across).

One deployment for the whole module (Ray and Serve take ~30 s to start on 2 cores); the tests
run in file order and the last one stops the server and checks that nothing of Ray outlives it.
Two models are the embedded imagine/shapes and the same weights under a second id (a model
folder), so both are fast on a CPU and each replica can tell them apart.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("ray")

import openai  # noqa: E402
import replicate  # noqa: E402
from huggingface_hub import InferenceClient  # noqa: E402
from PIL import Image  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from imagine.models.registry import BUILTIN_DIR  # noqa: E402
from tests.jobs.live import poll, sse  # noqa: E402
from tests.ray_serve.server import RayServer, process_tree, ray_server  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402

pytestmark = pytest.mark.slow

MODEL_A = "imagine/shapes"
MODEL_B = "test/shapes-b"  # the same weights, found in a model folder
LONG = 300  # steps: several seconds of denoising for the jobs that get cancelled or killed
FOREVER = 3000  # steps: minutes of denoising, for a request whose client leaves


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServer]:
    models = tmp_path_factory.mktemp("models")
    (models / "test").mkdir()
    (models / "test" / "shapes-b").symlink_to(BUILTIN_DIR, target_is_directory=True)
    with redis_server() as redis_url:
        env = {
            "IMAGINE_RAY_MODEL_REPLICAS": "2",
            "IMAGINE_RAY_INGRESS_REPLICAS": "2",
            "IMAGINE_CACHE_BACKEND": "redis",
            "IMAGINE_JOB_STORE": "redis",
            "IMAGINE_REDIS_URL": redis_url,
            "IMAGINE_MODEL_DIRS": f'["{models}"]',
            "IMAGINE_ALLOW_DOWNLOADS": "false",
            "IMAGINE_MAX_STEPS": str(FOREVER),
            "IMAGINE_MAX_REQUEST_S": "0",
            "IMAGINE_BATCH_WAIT_MS": "0",
            "IMAGINE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        }
        with ray_server(env) as running:
            yield running


@pytest.fixture(scope="module")
def url(server: RayServer) -> str:
    return server.url


def _replica(url: str, model_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/ray/models/{model_id}/replica", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_the_hf_client_gets_an_image(url: str) -> None:
    client = InferenceClient(model=f"{url}/models/{MODEL_A}")
    image = client.text_to_image("a red circle on the left", width=64, height=64, seed=3)
    assert image.size == (64, 64)
    again = client.text_to_image("a red circle on the left", width=64, height=64, seed=3)
    assert again.tobytes() == image.tobytes()


def test_the_openai_client_gets_an_image(url: str) -> None:
    client = openai.OpenAI(api_key="unused", base_url=f"{url}/v1", max_retries=0)
    result = client.images.generate(
        model="dall-e-2",
        prompt="a blue square",
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 5},
    )
    png = base64.b64decode(result.data[0].b64_json or "", validate=True)
    assert Image.open(io.BytesIO(png)).size == (64, 64)


def test_the_replicate_client_gets_an_image(url: str) -> None:
    client = replicate.Client(api_token="unused", base_url=url)
    output = client.run(MODEL_A, input={"prompt": "a green triangle", "seed": 4})
    response = httpx.get(str(output))
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)


def test_two_models_land_on_different_replicas(url: str) -> None:
    client = InferenceClient(model=f"{url}/models/{MODEL_B}")
    assert client.text_to_image("a yellow square", seed=6).size == (64, 64)
    a, b = _replica(url, MODEL_A), _replica(url, MODEL_B)
    assert a["replica"] != b["replica"] and a["pid"] != b["pid"]
    assert MODEL_A in a["models"] and MODEL_B not in a["models"]
    assert MODEL_B in b["models"] and MODEL_A not in b["models"]


def test_a_cache_hit_in_one_ingress_replica_after_a_miss_in_the_other(url: str) -> None:
    body = {"inputs": "a purple circle", "parameters": {"seed": 9}}
    first = httpx.post(f"{url}/models/{MODEL_A}", json=body, timeout=60)
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    made_by = first.headers["x-imagine-replica"]

    def from_the_other() -> httpx.Response | None:
        r = httpx.post(f"{url}/models/{MODEL_A}", json=body, timeout=60)
        return r if r.headers["x-imagine-replica"] != made_by else None

    hit = poll(from_the_other, "a request served by the other ingress replica")
    assert hit.headers["x-cache"] == "hit" and hit.content == first.content


def test_a_job_is_followed_over_sse_and_cancelled(url: str) -> None:
    client = replicate.Client(api_token="unused", base_url=url)
    job = client.predictions.create(
        version=MODEL_A, input={"prompt": "a red circle", "num_inference_steps": LONG, "seed": 7}
    )
    steps: list[int] = []
    previews = 0
    events = sse(f"{url}/v1/predictions/{job.id}/events")
    for event, _, data in events:
        if event == "preview":
            previews += 1
        if event == "status" and data["progress"] and data["progress"]["step"] >= 3:
            steps.append(data["progress"]["step"])
            if len(steps) == 1:
                assert client.predictions.cancel(job.id).status == "canceled"
        if event == "done":
            assert data["status"] == "canceled"
            break
    else:
        pytest.fail("the event stream ended without `done`")
    assert steps and previews >= 1
    assert max(steps) < LONG
    assert client.predictions.get(job.id).status == "canceled"


def test_a_client_that_goes_away_cancels_its_generation(url: str) -> None:
    long = {"inputs": "a red circle", "parameters": {"num_inference_steps": FOREVER}}

    def leave_early() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{url}/models/{MODEL_B}",
                json=long,
                headers={"x-use-cache": "false"},
                timeout=httpx.Timeout(60, read=3),
            )

    client = threading.Thread(target=leave_early)
    client.start()
    poll(lambda: _replica(url, MODEL_B)["busy"] == 1 or None, "the generation to start", 3)
    client.join()
    # FOREVER steps take minutes: a replica idle within seconds dropped the request
    poll(lambda: _replica(url, MODEL_B)["busy"] == 0 or None, "the replica to drop it", 15)


def test_killing_the_replica_running_a_job_runs_it_on_the_other_once(url: str) -> None:
    client = replicate.Client(api_token="unused", base_url=url)
    created = httpx.post(
        f"{url}/v1/models/{MODEL_A}/predictions",
        json={"input": {"prompt": "a blue circle", "num_inference_steps": 80, "seed": 8}},
    )
    assert created.status_code == 201, created.text
    job = client.predictions.get(created.json()["id"])
    owner = created.headers["x-imagine-replica"]  # the ingress replica that runs the job
    victim = _replica(url, MODEL_A)
    steps: list[int] = []
    killed_at: int | None = None
    for event, _, data in sse(f"{url}/v1/predictions/{job.id}/events"):
        if event == "status" and data["progress"]:
            steps.append(data["progress"]["step"])
            if killed_at is None and steps[-1] >= 5:
                os.kill(victim["pid"], signal.SIGKILL)
                killed_at = len(steps)
        if event == "done":
            assert data["status"] == "succeeded", data
            break
    assert killed_at is not None
    after = steps[killed_at:]
    # the job started again from its first step on another replica, and ran to the end
    assert min(after) < steps[killed_at - 1] and max(after) == 80
    # one run's outcome stored: the store's finish happens once per job
    final = client.predictions.get(job.id)
    assert final.status == "succeeded" and final.logs.count("succeeded") == 1
    assert isinstance(final.output, str)
    image = Image.open(io.BytesIO(httpx.get(final.output).content))
    assert image.size == (64, 64)
    # /metrics of the owner counts the resubmission
    scrape = poll(
        lambda: (
            (r := httpx.get(f"{url}/metrics")).headers["x-imagine-replica"] == owner and r or None
        ),
        "a scrape of the owner's /metrics",
    )
    assert _metric(scrape.text, "imagine_ray_resubmitted_total", model=MODEL_A) >= 1
    survivor = poll(
        lambda: (r := _replica(url, MODEL_A))["pid"] != victim["pid"] and r or None,
        "model A to be served by a live replica",
    )
    assert MODEL_A in survivor["models"]


def test_sigterm_stops_ray_and_leaves_no_process(server: RayServer) -> None:
    tree = process_tree(server.proc.pid)
    ray_processes = {pid: cmd for pid, cmd in tree.items() if pid != server.proc.pid}
    assert any("raylet" in cmd for cmd in ray_processes.values()), tree
    assert any("ModelReplica" in cmd for cmd in ray_processes.values()), tree
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=90) == 0, server.tail()
    alive = {pid: cmd for pid, cmd in ray_processes.items() if Path(f"/proc/{pid}").exists()}
    assert not alive, f"left behind after SIGTERM: {alive}"
