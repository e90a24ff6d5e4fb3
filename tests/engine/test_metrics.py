"""The Prometheus series the engine feeds, and the engine's import boundary."""

from __future__ import annotations

import subprocess
import sys

from imagine.metrics import Metrics
from tests.engine.conftest import EngineFactory
from tests.engine.fake_manager import make_request


async def test_engine_feeds_the_series(make_engine: EngineFactory) -> None:
    engine, _ = make_engine(max_batch_size=4)
    for seed in range(3):
        await engine.generate(make_request(seed), client_id="c", wait_for_model=True)
    engine.metrics.observe_request("m", 200)
    engine.metrics.observe_cache(hit=False)
    body, content_type = engine.metrics.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    for line in (
        'imagine_requests_total{model="m",status="200"} 1.0',
        'imagine_batch_size_count{model="m"} 3.0',
        'imagine_queue_seconds_count{model="m"} 3.0',
        'imagine_stage_seconds_count{model="m",stage="denoising"} 3.0',
        'imagine_stage_seconds_count{model="m",stage="text_encoding"} 3.0',
        'imagine_stage_seconds_count{model="m",stage="decoding"} 3.0',
        'imagine_denoising_steps_total{model="m"} 12.0',
        'imagine_steps_per_second{model="m"} 400.0',
        'imagine_queue_depth{model="m"} 0.0',
        "imagine_models_loaded 1.0",
        'imagine_model_memory_bytes{model="m"} 1000.0',
        'imagine_model_loads_total{model="m",outcome="ok"} 1.0',
        'imagine_cache_lookups_total{result="miss"} 1.0',
        "process_resident_memory_bytes",
    ):
        assert line in text, line


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.observe_request("m", 500)
    assert (
        b.registry.get_sample_value("imagine_requests_total", {"model": "m", "status": "500"})
        is None
    )


def test_engine_and_cache_import_no_http_or_wire_code() -> None:
    code = (
        "import sys, imagine.engine.engine, imagine.cache, imagine.cache.redis, imagine.metrics\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette')"
        " or m.startswith(('imagine.http', 'imagine.protocols'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
