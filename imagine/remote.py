"""`imagine generate --server URL`: one job on a running server, followed on its progress stream.

Creates the job through the Replicate-shaped API, shows a tqdm bar (queue position while queued,
then steps and the server's ETA), downloads the image when it succeeds. Ctrl-C cancels the job
on the server before exiting.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Failed", "generate_remote", "iter_sse"]

_OUTPUT_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class Failed(RuntimeError):
    """The server refused or failed the job; the message is the server's."""


def iter_sse(lines: Iterable[str]) -> Iterator[tuple[str, str, Any]]:
    """(event, id, data) of each server-sent event; data JSON-decoded when it is JSON."""
    event = ident = ""
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            continue
        if not line:
            if event:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield event, ident, value
            event, ident, data = "", "", []
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "id":
            ident = value
        elif name == "data":
            data.append(value)


def generate_remote(
    server: str,
    *,
    model_id: str,
    prompt: str,
    parameters: dict[str, Any],
    output: Path,
    fmt: str,
    token: str | None = None,
) -> dict[str, Any]:
    """Run one job on `server` and write its image to `output`; returns the final prediction.
    Raises Failed (the server's message), KeyboardInterrupt after canceling the job."""
    from tqdm import tqdm

    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = {"input": {"prompt": prompt, **parameters, "output_format": _OUTPUT_FORMATS[fmt]}}
    with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=60) as http:
        created = http.post(f"/v1/models/{model_id}/predictions", json=body)
        if created.status_code >= 400:
            raise Failed(_problem(created))
        job = created.json()
        bar = tqdm(total=0, desc="queued", unit="step", file=sys.stderr)
        try:
            final = _follow(http, job, bar)
        except KeyboardInterrupt:
            http.post(job["urls"]["cancel"])
            bar.write(f"canceled job {job['id']}")
            raise
        finally:
            bar.close()
        if final["status"] != "succeeded":
            raise Failed(f"job {final['id']} {final['status']}: {final.get('error') or ''}")
        url = final["output"] if isinstance(final["output"], str) else final["output"][0]
        image = http.get(url)
        image.raise_for_status()
        output.write_bytes(image.content)
        return final


def _follow(http: httpx.Client, job: dict[str, Any], bar: Any) -> dict[str, Any]:
    with http.stream("GET", job["urls"]["events"], timeout=None) as stream:
        if stream.status_code >= 400:
            stream.read()
            raise Failed(_problem(stream))
        for event, _, data in iter_sse(stream.iter_lines()):
            if event == "done":
                return data  # type: ignore[no-any-return]
            if event != "status":
                continue
            if data["status"] == "starting" and data["queue_position"] is not None:
                bar.set_description(f"queued #{data['queue_position']}")
            elif data["progress"]:
                bar.set_description("denoising")
                bar.total = data["progress"]["total"]
                bar.update(data["progress"]["step"] - bar.n)
            if data["eta_s"] is not None:
                bar.set_postfix_str(f"eta {data['eta_s']:.1f}s")
    raise Failed(f"the event stream of job {job['id']} ended early")


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return str(body.get("detail") or body.get("error") or body)
