"""The `imagine` command: argument handling, the public-bind guard, generate, tool dispatch."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagine import cli
from imagine.imaging import read_parameters
from tests.http.fakes import FakeEngine


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAGINE_HOST", "IMAGINE_TOKENS", "IMAGINE_TOKEN_HASHES", "IMAGINE_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("IMAGINE_ALLOW_UNAUTHENTICATED_PUBLIC", raising=False)


def test_serve_settings_from_flags(tmp_path: Path) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text("port = 9000\nmax_steps = 12\n")
    args = cli._parser().parse_args(
        [
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.2",
            "--model",
            "a/b",
            "--model",
            "c/d",
        ]
    )
    settings = cli._serve_settings(args)
    assert (settings.host, settings.port, settings.max_steps) == ("127.0.0.2", 9000, 12)
    assert settings.preload == ["a/b", "c/d"] and settings.default_model == "a/b"
    assert settings.allow_unauthenticated_public is False


def test_path_model_ids_are_on_for_generate_only() -> None:
    generate = cli._parser().parse_args(["generate", "x", "-o", "x.png", "--model", "./m"])
    assert cli._generate_settings(generate).allow_path_model_ids is True
    serve = cli._parser().parse_args(["serve", "--model", "./m"])
    assert cli._serve_settings(serve).allow_path_model_ids is False


def test_serve_refuses_public_bind_without_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "--allow-unauthenticated-public" in capsys.readouterr().err


class _FakeManager:
    """Stands in for ModelManager in `generate`: describe / load / run_batch with observers."""

    def __init__(self, *, settings: Any) -> None:
        self.engine = FakeEngine(models=("imagine/shapes", "org/model"))

    def describe(self, model_id: str) -> Any:
        return self.engine.describe(model_id)

    async def load(self, model_id: str) -> str:
        return model_id

    def unload(self, model_id: str) -> None:
        pass

    def estimated_load_time(self, model_id: str) -> float:
        return 0.0

    def health(self) -> dict[str, Any]:
        return {}

    def run_batch(self, model: str, requests: list[Any], *, observers: Any) -> list[Any]:
        import asyncio

        from imagine.request import StepInfo, no_preview

        total = requests[0].num_inference_steps
        for n in range(1, total + 1):
            assert [observe(StepInfo(n, total, no_preview)) for observe in observers] == [False]
        return [
            asyncio.run(self.engine.generate(requests[0], client_id="cli", wait_for_model=True))
        ]


def test_generate_writes_an_image_with_parameters(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import imagine.models.manager as manager_mod

    monkeypatch.setattr(manager_mod, "ModelManager", _FakeManager)
    out = tmp_path / "out.webp"
    argv = ["generate", "a cube", "-o", str(out), "--model", "org/model", "--seed", "5"]
    argv += ["--steps", "3", "--width", "40", "--height", "24", "--negative-prompt", "dark"]
    assert cli.main(argv) == 0
    assert Image.open(out).format == "WEBP" and Image.open(out).size == (40, 24)
    params = read_parameters(out.read_bytes())
    assert params is not None
    assert (params["seed"], params["num_inference_steps"], params["negative_prompt"]) == (
        5,
        3,
        "dark",
    )


def test_generate_rejects_unknown_extension(tmp_path: Path) -> None:
    assert cli.main(["generate", "x", "-o", str(tmp_path / "out.gif")]) == 2


@pytest.mark.parametrize(
    ("command", "module"),
    [
        ("train-builtin", "imagine.models.builtin.train"),
        ("eval-builtin", "imagine.models.builtin.evaluate"),
    ],
)
def test_builtin_tools_dispatch(monkeypatch: pytest.MonkeyPatch, command: str, module: str) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType(module)
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    assert cli.main([command, "--steps", "3", "x"]) == 0
    assert seen == [["--steps", "3", "x"]]


@pytest.mark.slow
def test_generate_with_the_real_manager(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("IMAGINE_MODEL_DIRS", f'["{tiny_model_root}"]')
    monkeypatch.setenv("IMAGINE_DEVICE", "cpu")
    monkeypatch.setenv("IMAGINE_ALLOW_DOWNLOADS", "false")
    out = tmp_path / "sd.png"
    argv = ["generate", "a red cube", "-o", str(out), "--model", "tiny/sd", "--seed", "3"]
    argv += ["--steps", "2", "--width", "64", "--height", "64"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "2/2" in captured.err  # the progress bar went over both steps
    params = read_parameters(out.read_bytes())
    assert params is not None and params["model_id"] == "tiny/sd" and params["seed"] == 3
    again = tmp_path / "again.png"
    assert cli.main([*argv[:3], str(again), *argv[4:]]) == 0
    assert Image.open(again).tobytes() == Image.open(out).tobytes()
