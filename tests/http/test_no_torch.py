"""The HTTP edge and the wire adapter never import torch themselves."""

from __future__ import annotations

import subprocess
import sys


def test_http_layer_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "import imagine.http.app, imagine.http.routes_hf, imagine.http.routes_jobs\n"
        "import imagine.http.monitoring, imagine.service, imagine.jobs.service\n"
        "import imagine.protocols.hf\n"
        "import imagine.imaging, imagine.auth\n"
        "assert 'torch' not in sys.modules, 'torch imported by the HTTP layer'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
