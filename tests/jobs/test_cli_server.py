"""`imagine generate --server URL`: a job on a live server, followed on its progress stream;
Ctrl-C (SIGINT) cancels the job on the server."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imagine import cli
from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.imaging import read_parameters
from imagine.settings import Settings
from tests.http.live import serve
from tests.jobs.live import MODEL, poll

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(preload=[MODEL], max_steps=400, max_request_s=0)
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


def test_generate_on_a_server_writes_the_image(base_url: str, tmp_path: Path) -> None:
    out = tmp_path / "tri.jpg"
    argv = ["generate", "a large yellow triangle at the top", "-o", str(out)]
    assert cli.main([*argv, "--server", base_url, "--seed", "7", "--steps", "6"]) == 0
    assert Image.open(out).format == "JPEG"
    params = read_parameters(out.read_bytes())
    assert params is not None and (params["seed"], params["num_inference_steps"]) == (7, 6)


def test_generate_on_a_server_reports_bad_input(
    base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.png"
    assert cli.main(["generate", "x", "-o", str(out), "--server", base_url, "--width", "7"]) == 1
    assert "input.width" in capsys.readouterr().err and not out.exists()


def test_ctrl_c_cancels_the_job_on_the_server(base_url: str, tmp_path: Path) -> None:
    out = tmp_path / "long.png"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagine.cli", "generate", "a red circle", "-o", str(out)]
        + ["--server", base_url, "--steps", "400"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def running() -> dict | None:
        for job in httpx.get(f"{base_url}/v1/predictions").json()["results"]:
            if job["input"].get("num_inference_steps") == 400 and job["status"] == "processing":
                return job
        return None

    job = poll(running, "the CLI's job to run", deadline_s=120)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    final = poll(
        lambda: (j := httpx.get(job["urls"]["get"]).json())["status"] == "canceled" and j or None,
        "the job to be canceled",
    )
    assert final["output"] is None and not out.exists()
