"""The cluster's Serve config (deploy/ray-serve.yaml) against Serve's own schema and this app:
a renamed deployment or builder would make `serve deploy` fail on a cluster, not here."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from ray.serve.schema import ServeDeploySchema  # noqa: E402

from imagine.ray_serve import deployments  # noqa: E402
from imagine.ray_serve.config import replica_settings  # noqa: E402
from imagine.settings import Settings, hash_token  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _serve_configs() -> list[dict]:
    """The Serve config file, and the one inside the KubeRay RayService."""
    rayservice = yaml.safe_load((DEPLOY / "kuberay-rayservice.yaml").read_text())
    return [
        yaml.safe_load((DEPLOY / "ray-serve.yaml").read_text()),
        yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    ]


@pytest.mark.parametrize("raw", _serve_configs(), ids=["ray-serve.yaml", "rayservice"])
def test_the_serve_config_is_valid_and_names_this_apps_deployments(raw: dict) -> None:
    config = ServeDeploySchema.model_validate(raw)
    (app,) = config.applications
    module, _, name = app.import_path.partition(":")
    assert getattr(importlib.import_module(module), name) is deployments.build_app
    names = {d.name for d in app.deployments}
    assert names == {deployments.Ingress.name, deployments.ModelReplica.name}
    # the builder accepts the config's args
    assert deployments.build_app(app.args) is not None


def test_plain_tokens_reach_replicas_only_as_hashes() -> None:
    data = replica_settings(Settings(tokens=["s3cret-token"]))
    assert "s3cret-token" not in repr(data)
    assert Settings(**data).all_token_hashes() == {hash_token("s3cret-token")}
