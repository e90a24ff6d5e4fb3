"""The `imagine` command.

    imagine serve [--host H] [--port P] [--model ID ...] [--config FILE]
                  [--allow-unauthenticated-public] [--ray]
    imagine generate "prompt" -o out.png [--model ID] [--steps N] [--guidance G] [--seed S]
                  [--width W] [--height H] [--scheduler NAME] [--negative-prompt TEXT]
    imagine train-builtin [...]   imagine eval-builtin [...]   (the embedded model's tools)

`generate` accepts a folder path as --model (its user is local: it sets allow_path_model_ids);
`serve` does not, except for the ids it is told to preload (see docs/models.md).
The engine, the model manager and torch are imported only by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from imagine import __version__
from imagine.settings import Settings

__all__ = ["main"]

_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine", description="Self-hosted text-to-image.")
    parser.add_argument("--version", action="version", version=f"imagine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HF-compatible HTTP API")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--model",
        action="append",
        metavar="ID",
        help="model to preload (repeatable); the first is served at POST /",
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    serve.add_argument(
        "--allow-unauthenticated-public",
        action="store_true",
        default=None,
        help="allow a non-loopback bind with no tokens configured",
    )
    serve.add_argument(
        "--ray",
        action="store_true",
        help="run on a Ray Serve instance of its own: model replicas behind the HTTP app "
        "(needs imagine[ray]; replicas from IMAGINE_RAY_*)",
    )

    gen = sub.add_parser("generate", help="generate one image without a server")
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", type=Path, required=True, help=".png, .jpg or .webp")
    gen.add_argument(
        "--model", metavar="ID", help="model id or folder path (default: the default model)"
    )
    gen.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    gen.add_argument("--steps", type=int, dest="num_inference_steps")
    gen.add_argument("--guidance", type=float, dest="guidance_scale")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--scheduler")
    gen.add_argument("--negative-prompt", dest="negative_prompt")
    gen.add_argument(
        "--server",
        metavar="URL",
        help="run on a running imagine server (a job; Ctrl-C cancels it) instead of in-process",
    )
    gen.add_argument("--token", help="bearer token for --server (default: $IMAGINE_TOKEN)")

    for name, help_text in (
        ("train-builtin", "train the embedded model"),
        ("eval-builtin", "evaluate the embedded model"),
    ):
        tool = sub.add_parser(name, help=help_text, add_help=False)
        tool.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The builtin tools parse their own arguments (options included): hand them everything.
    if argv and argv[0] == "train-builtin":
        from imagine.models.builtin.train import main as train_main

        return int(train_main(argv[1:]) or 0)
    if argv and argv[0] == "eval-builtin":
        from imagine.models.builtin.evaluate import main as eval_main

        return int(eval_main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _generate(args)


def _serve_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "allow_unauthenticated_public": args.allow_unauthenticated_public,
    }
    if args.model:
        overrides["preload"] = list(args.model)
        overrides["default_model"] = args.model[0]
    settings = Settings.load(args.config, **overrides)
    if settings.data_dir is None:  # a served job store is durable by default
        from imagine.jobs import default_data_dir

        settings = settings.model_copy(update={"data_dir": default_data_dir()})
    return settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from imagine.auth import InsecureBind, check_bind, install_log_redaction, is_loopback
    from imagine.http.app import create_app
    from imagine.http.server import uvicorn_config

    settings = _serve_settings(args)
    try:
        check_bind(settings)
    except InsecureBind as exc:
        print(f"imagine: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction(settings=settings)
    if args.ray:
        return _serve_on_ray(settings)
    engine = build_engine(settings)
    app = create_app(
        settings, engine, build_cache(settings, metrics=getattr(engine, "metrics", None))
    )
    auth_on = bool(settings.all_token_hashes())
    print(f"imagine {__version__} listening on http://{_url_host(settings.host)}:{settings.port}")
    print(f"  default model: {settings.default_model}; preloading: {', '.join(settings.preload)}")
    if auth_on:
        print(f"  auth: on ({len(settings.all_token_hashes())} token(s))")
    elif is_loopback(settings.host):
        print("  auth: off (loopback bind, no tokens configured)")
    else:
        print("  auth: OFF on a public address (--allow-unauthenticated-public)", file=sys.stderr)
    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


def _serve_on_ray(settings: Settings) -> int:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        print("imagine: --ray needs the ray extra: pip install 'imagine[ray]'", file=sys.stderr)
        return 2
    from imagine.ray_serve.runner import serve_on_ray

    return serve_on_ray(settings)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def build_engine(settings: Settings) -> Any:
    """The real engine over a ModelManager (imports torch)."""
    from imagine.engine.engine import Engine
    from imagine.models.manager import ModelManager

    return Engine(settings=settings, manager=ModelManager(settings=settings))


def build_cache(settings: Settings, *, metrics: Any = None) -> Any:
    """The configured result cache (None for `cache_backend = "none"`), counting hits and
    misses in `metrics` (the engine's) when given."""
    from imagine.cache import create_cache

    return create_cache(settings, metrics=metrics)


def _generate(args: argparse.Namespace) -> int:
    from imagine.errors import ImagineError

    fmt = _FORMATS.get(args.output.suffix.lower())
    if fmt is None:
        print(f"imagine: output must end in {', '.join(_FORMATS)}", file=sys.stderr)
        return 2
    keys = ("num_inference_steps", "guidance_scale", "seed", "width", "height", "scheduler")
    parameters = {k: getattr(args, k) for k in (*keys, "negative_prompt")}
    parameters = {k: v for k, v in parameters.items() if v is not None}
    if args.server:
        return _generate_on_server(args, parameters, fmt)
    settings = _generate_settings(args)
    model_id = args.model or settings.default_model
    try:
        request, body = asyncio.run(
            _generate_image(settings, model_id, args.prompt, parameters, fmt)
        )
    except ImagineError as exc:
        print(f"imagine: {exc.message}", file=sys.stderr)
        return 1
    args.output.write_bytes(body)
    print(f"wrote {args.output} ({request.width}x{request.height}, seed {request.seed})")
    return 0


def _generate_on_server(args: argparse.Namespace, parameters: dict[str, Any], fmt: str) -> int:
    import os

    from imagine.remote import Failed, generate_remote
    from imagine.settings import DEFAULT_MODEL

    try:
        final = generate_remote(
            args.server,
            model_id=args.model or DEFAULT_MODEL,
            prompt=args.prompt,
            parameters=parameters,
            output=args.output,
            fmt=fmt,
            token=args.token or os.environ.get("IMAGINE_TOKEN"),
        )
    except Failed as exc:
        print(f"imagine: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    seed = final["input"].get("seed", "random")
    print(f"wrote {args.output} (job {final['id']}, seed {seed})")
    return 0


def _generate_settings(args: argparse.Namespace) -> Settings:
    # A local user may name any folder they can read: path ids are on for `generate`.
    return Settings.load(args.config, allow_path_model_ids=True)


async def _generate_image(
    settings: Settings, model_id: str, prompt: str, parameters: dict[str, Any], fmt: str
) -> tuple[Any, bytes]:
    """One request through the engine and the service layer, as the server runs it, with a
    progress bar over the job's steps. Returns the request and the encoded image."""
    from tqdm import tqdm

    from imagine.engine.engine import Engine
    from imagine.models.manager import ModelManager
    from imagine.service import ImageService

    engine = Engine(settings=settings, manager=ModelManager(settings=settings))
    images = ImageService(settings=settings, engine=engine)
    try:
        request = await images.validate(model_id, prompt, parameters, fmt)  # type: ignore[arg-type]
        print(f"loading {model_id} ...", file=sys.stderr)
        await engine.load(model_id)
        job = engine.submit(request, client_id="cli", wait_for_model=True)
        with tqdm(total=request.num_inference_steps, desc="denoising", unit="step") as bar:
            async for snap in job.events():
                bar.update(snap.step - bar.n)
        encoded = await images.encode(await job.wait())
        return request, encoded.body
    finally:
        await engine.close()


if __name__ == "__main__":
    raise SystemExit(main())
