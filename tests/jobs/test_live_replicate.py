"""The job API against a live server (uvicorn + the real engine on imagine/shapes), driven by
the official `replicate` client: run, create + wait, stream, cancel (queued and running), list.

"Stops within a step" is shown by the steps counter, not wall time: the worker runs one call at
a time, so once a later job has finished, the counter holds the canceled call's steps plus the
later job's own.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.live import serve
from tests.jobs.live import MODEL, poll, sse, steps_done

pytestmark = pytest.mark.slow

LONG = 400  # steps: ~10 s on this CPU if nothing stopped it


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(
        preload=[MODEL],
        max_steps=LONG,
        max_request_s=0,
        batch_wait_ms=0.0,
        per_client_queue=64,
        # One request at a time, so jobs behind a running one queue (the stream shows their
        # place); with more, step-level batching lets them join it at once.
        max_batch_size=1,
    )
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> replicate.Client:
    return replicate.Client(api_token="unused", base_url=base_url)


def _image(url: str) -> Image.Image:
    response = httpx.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def test_run_returns_a_url_of_the_image(client: replicate.Client) -> None:
    output = client.run(MODEL, input={"prompt": "a red circle on the left", "seed": 4})
    assert isinstance(output, str) and output.startswith("http://")
    image = _image(output)
    assert (image.format, image.size) == ("PNG", (64, 64))
    jpeg = client.run(MODEL, input={"prompt": "a red circle", "output_format": "jpg", "seed": 4})
    assert httpx.get(jpeg).headers["content-type"] == "image/jpeg"


def test_a_wait_that_runs_out_answers_starting_and_run_still_gets_the_output(
    client: replicate.Client, base_url: str
) -> None:
    long_input = {"prompt": "a red circle", "num_inference_steps": 150, "seed": 8}
    r = httpx.post(
        f"{base_url}/v1/models/{MODEL}/predictions",
        json={"input": long_input},
        headers={"prefer": "wait=1"},
        timeout=30,
    )
    assert r.status_code == 201 and r.json()["status"] == "starting"
    # run() takes any other status as finished: it must poll on and return the image
    output = client.run(MODEL, input={**long_input, "seed": 9}, wait=1)
    assert isinstance(output, str) and _image(output).size == (64, 64)


def test_create_then_wait_with_several_outputs(client: replicate.Client) -> None:
    prediction = client.predictions.create(
        version=MODEL, input={"prompt": "a blue square", "num_outputs": 3, "seed": 10}
    )
    assert prediction.status in ("starting", "processing", "succeeded")
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.error is None
    assert isinstance(prediction.output, list) and len(prediction.output) == 3
    images = [_image(url) for url in prediction.output]
    assert len({img.tobytes() for img in images}) == 3  # consecutive seeds, three images
    assert prediction.metrics is not None and prediction.metrics["predict_time"] > 0
    # the same request as a single image with seed 11 is the second image (batching moves a
    # pixel by at most 1/255)
    single = client.run(MODEL, input={"prompt": "a blue square", "seed": 11})
    alone = np.asarray(_image(single), dtype=np.int16)
    assert np.abs(alone - np.asarray(images[1], dtype=np.int16)).max() <= 1


def test_stream_yields_logs_then_output_then_done(client: replicate.Client) -> None:
    events = list(client.stream(MODEL, input={"prompt": "a green triangle", "seed": 2}))
    kinds = [e.event.value for e in events]
    assert kinds[-1] == "done" and kinds.count("output") == 1 and "logs" in kinds
    output = next(e for e in events if e.event.value == "output")
    assert _image(str(output)).size == (64, 64)


def test_cancel_a_queued_job_and_a_running_one(client: replicate.Client, base_url: str) -> None:
    running = client.predictions.create(
        version=MODEL, input={"prompt": "a red circle", "num_inference_steps": LONG, "seed": 1}
    )
    # a different size never shares the running batch: it waits in the queue
    queued = client.predictions.create(
        version=MODEL, input={"prompt": "a red circle", "width": 32, "height": 32, "seed": 2}
    )
    # (earlier tests' jobs may still hold the worker: wait for this one to run)
    poll(
        lambda: client.predictions.get(running.id).status == "processing" or None,
        "the long job to start denoising",
    )
    assert client.predictions.get(queued.id).status == "starting"
    canceled = client.predictions.cancel(queued.id)
    assert canceled.status == "canceled"
    stopped = client.predictions.cancel(running.id)
    at_cancel = steps_done(base_url)
    assert stopped.status == "canceled" and stopped.output is None
    # the worker runs one call at a time: once this job is done, the canceled call has stopped
    after = client.run(MODEL, input={"prompt": "a yellow square", "num_inference_steps": 4})
    assert _image(after).size == (64, 64)
    total = steps_done(base_url)
    assert total - at_cancel <= 1 + 4, "the canceled call ran on past its next step"
    # canceling a finished job changes nothing
    assert client.predictions.cancel(running.id).status == "canceled"
    assert client.predictions.get(queued.id).status == "canceled"


def test_list_pages_newest_first(client: replicate.Client) -> None:
    ids = [
        client.predictions.create(version=MODEL, input={"prompt": f"a red square {i}"}).id
        for i in range(25)
    ]
    first = client.predictions.list()
    assert first.next is not None and len(first.results) == 20
    second = client.predictions.list(first.next)
    seen = [p.id for p in first.results + second.results]
    assert len(seen) == len(set(seen))
    assert seen[:25] == list(reversed(ids))  # newest first


def test_bad_input_is_a_problem_naming_the_field(client: replicate.Client, base_url: str) -> None:
    with pytest.raises(ReplicateError) as bad:
        client.run(MODEL, input={"prompt": "a cube", "num_inference_steps": 0})
    assert bad.value.status == 400 and "input.num_inference_steps" in (bad.value.detail or "")
    cases = [
        ("/v1/models/imagine/shapes/predictions", {"input": {}}, "input.prompt"),
        (
            "/v1/models/imagine/shapes/predictions",
            {"input": {"prompt": "x", "width": 7}},
            "input.width",
        ),
        (
            "/v1/models/imagine/shapes/predictions",
            {"input": {"prompt": "x", "scheduler": "No"}},
            "input.scheduler",
        ),
        (
            "/v1/models/imagine/shapes/predictions",
            {"input": {"prompt": "x", "num_outputs": 9}},
            "input.num_outputs",
        ),
        (
            "/v1/models/imagine/shapes/predictions",
            {"input": {"prompt": "x", "output_format": "gif"}},
            "input.output_format",
        ),
        (
            "/v1/models/imagine/shapes/predictions",
            {"input": {"prompt": "x"}, "webhook": "http://10.1.1.1/h"},
            "webhook",
        ),
        (
            "/v1/models/imagine/shapes/predictions",
            {"input": {"prompt": "x"}, "webhook_events_filter": ["x"]},
            "webhook_events_filter",
        ),
        ("/v1/predictions", {"input": {"prompt": "x"}}, "version"),
        (
            "/v1/predictions",
            {"version": "imagine/shapes:nope", "input": {"prompt": "x"}},
            "version",
        ),
    ]
    for path, body, field in cases:
        r = httpx.post(base_url + path, json=body)
        assert r.status_code == 400, (body, r.text)
        problem = r.json()
        assert set(problem) >= {"title", "detail", "status"} and problem["status"] == 400
        assert problem["invalid_fields"][0]["field"] == field, (body, problem)
        assert field in problem["detail"]
    r = httpx.post(base_url + "/v1/models/no/such/predictions", json={"input": {"prompt": "x"}})
    assert r.status_code == 404 and r.json()["status"] == 404
    r = httpx.get(base_url + "/v1/predictions/nosuchid")
    assert r.status_code == 404 and r.json()["code"] == "job_not_found"
    r = httpx.post(base_url + "/v1/predictions/nosuchid/cancel")
    assert r.status_code == 404 and r.json()["code"] == "job_not_found"
    r = httpx.post(
        base_url + "/v1/models/imagine/shapes/predictions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["invalid_fields"][0]["field"] == "body"
    r = httpx.post(
        base_url + "/v1/models/imagine/shapes/predictions",
        json={"input": {"prompt": "x"}},
        headers={"prefer": "wait=soon"},
    )
    assert r.status_code == 400 and r.json()["invalid_fields"][0]["field"] == "Prefer"


def test_idempotency_key_returns_the_same_job(base_url: str) -> None:
    body = {"input": {"prompt": "a purple circle", "seed": 5}}
    headers = {"idempotency-key": "retry-1", "prefer": "wait"}
    url = base_url + "/v1/models/imagine/shapes/predictions"
    first = httpx.post(url, json=body, headers=headers, timeout=70).json()
    again = httpx.post(url, json=body, headers=headers, timeout=70).json()
    assert first["id"] == again["id"] and again["status"] == "succeeded"
    other = httpx.post(url, json=body, headers={"idempotency-key": "retry-2"}).json()
    assert other["id"] != first["id"]


def test_progress_stream_positions_steps_previews_then_done(base_url: str) -> None:
    url = base_url + "/v1/models/imagine/shapes/predictions"
    # a long job holds the worker; three more queue behind it (max_batch_size=1)
    blocker = httpx.post(url, json={"input": {"prompt": "x", "num_inference_steps": 60}}).json()
    sizes = [(32, 32), (48, 48), (96, 48)]
    jobs = [
        httpx.post(
            url,
            json={"input": {"prompt": "a red circle", "width": w, "height": h, "seed": 3}},
        ).json()
        for w, h in sizes
    ]
    last = jobs[-1]
    start = last["queue_position"]  # 3, or more if earlier tests' jobs still queue
    assert last["status"] == "starting" and start >= 3
    positions: list[int] = []
    steps: list[int] = []
    previews: list[Image.Image] = []
    events = list(sse(last["urls"]["events"]))
    for event, ident, data in events:
        assert ident
        if event == "status":
            if data["queue_position"] is not None:
                positions.append(data["queue_position"])
            if data["progress"] and data["status"] == "processing":
                steps.append(data["progress"]["step"])
        elif event == "preview":
            header, _, b64 = data["image"].partition(",")
            assert header == "data:image/jpeg;base64"
            import base64

            previews.append(Image.open(io.BytesIO(base64.b64decode(b64))))
    assert events[-1][0] == "done" and events[-1][2]["status"] == "succeeded"
    assert positions[0] == start and positions == sorted(positions, reverse=True)
    assert positions[-1] == 1
    distinct = [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]]
    assert distinct == list(range(distinct[0], 17)) and distinct[0] <= 1
    assert previews and all(abs(p.width / p.height - 2.0) < 0.1 for p in previews)
    # a late subscriber gets the current state first, then the end
    late = list(sse(blocker["urls"]["events"]))
    assert late[0][0] == "status" and late[-1][0] == "done"
