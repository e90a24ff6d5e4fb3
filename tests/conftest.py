"""Session fixtures shared by every test package: tiny offline pipelines of each family.

`tiny_model_root` is a folder laid out as `<root>/tiny/<name>` (built once per session), so
`Settings(model_dirs=[tiny_model_root])` serves the models by id; `tiny_model_ids` maps a family
key ("sd", "sdxl", "sdxl_lcm_lora", "sd3", "flux", "kolors") to its id ("tiny/sd", ...).
torch is imported lazily so test packages that never ask for these fixtures stay torch-free.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from tests.fixtures.tiny_pipelines import build_tiny_models

    # Random tiny weights produce denormals; flushing them makes CPU runs 10-30x faster.
    torch.set_flush_denormal(True)
    # Tiny ops gain nothing from a second thread, and on a busy 2-core machine OpenMP threads
    # waiting on each other make runs many times slower.
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_models")
    build_tiny_models(root)
    return root


@pytest.fixture(scope="session")
def tiny_model_ids(tiny_model_root: Path) -> dict[str, str]:
    from tests.fixtures.tiny_pipelines import TINY_IDS

    return dict(TINY_IDS)
