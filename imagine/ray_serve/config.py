"""How many replicas `imagine serve --ray` runs and what each may use (`IMAGINE_RAY_*`).

On a cluster the Serve config file says this instead (deploy/ray-serve.yaml: `num_replicas`
or `autoscaling_config`, `ray_actor_options`, `max_ongoing_requests` per deployment, and the
application builder's `args`); these are the same knobs for one machine.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagine.settings import Settings

__all__ = ["RayOptions", "replica_settings"]


class RayOptions(BaseSettings):
    """Every knob of the Serve application (`IMAGINE_RAY_<FIELD>`)."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_RAY_", extra="forbid")

    app_name: str = "imagine"
    ingress_replicas: int = Field(default=1, ge=1)
    model_replicas: int = Field(default=1, ge=1)
    # Models one replica keeps loaded (Serve's multiplexing LRU): a request goes to a replica
    # that has its model when there is one, and the least recently used model is unloaded to
    # make room for another.
    models_per_replica: int = Field(default=2, ge=1)
    # CPUs Ray reserves per replica: fractions, so that a small machine can hold the ingress and
    # two model replicas (Ray's default of 1 each runs 2 cores out). The engine's own threads
    # decide how many cores a model really uses.
    ingress_cpus: float = Field(default=0.25, ge=0)
    replica_cpus: float = Field(default=0.5, ge=0)
    replica_gpus: float = Field(default=0.0, ge=0)
    # Requests one ingress replica holds at once (each SSE stream and waiting HF call is one;
    # Serve's default of 5 would cap the engine's batches) and one model replica holds (its
    # engine's queue does the admission: queue_size, per-client caps, deadlines).
    ingress_max_ongoing: int = Field(default=1000, ge=1)
    replica_max_ongoing: int = Field(default=128, ge=1)


def replica_settings(settings: Settings) -> dict[str, Any]:
    """`settings` as the plain data a deployment's init arguments carry: plain tokens are sent
    as their hashes only (init arguments are kept in Ray's control store)."""
    data = settings.model_dump(mode="json", exclude={"tokens"})
    data["token_hashes"] = sorted(settings.all_token_hashes())
    return data
