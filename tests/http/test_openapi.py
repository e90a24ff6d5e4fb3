"""schemathesis (its own CLI, as a user runs it) against the server's own OpenAPI document, on
`imagine serve` in a process of its own: the real engine on imagine/shapes with tiny limits, so
valid requests are cheap. Every answer must be no 5xx and as the document says: status, content
type, headers and body schema (imagine/http/openapi.py). Deterministic and bounded: about 2,500
cases here (about 80 s); IMAGINE_SCHEMATHESIS_EXAMPLES=450 gives the 10,000-case run (12,948
cases in 3.4 min on 2026-12-03: operations with few distinct inputs run out of new ones early,
so the count grows less than the setting)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.http.live import serve_process

pytestmark = pytest.mark.slow

EXAMPLES = os.environ.get("IMAGINE_SCHEMATHESIS_EXAMPLES", "40")  # per operation and phase
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
ENV = {
    "IMAGINE_PRELOAD": '["imagine/shapes"]',
    "IMAGINE_MAX_STEPS": "2",
    "IMAGINE_MAX_PIXELS": str(64 * 64),
    "IMAGINE_MAX_PROMPT_CHARS": "200",
    "IMAGINE_PREVIEWS": "false",
    "IMAGINE_BATCH_WAIT_MS": "0",
    "IMAGINE_QUEUE_SIZE": "256",
    "IMAGINE_PER_CLIENT_QUEUE": "256",
    "IMAGINE_LOG_LEVEL": "warning",
}


def test_schemathesis_finds_no_5xx_and_no_mismatch(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    env = {**ENV, "IMAGINE_DATA_DIR": str(tmp_path / "data")}
    with serve_process(env, log) as (_, url):
        operations = sum(len(m) for m in httpx.get(f"{url}/openapi.json").json()["paths"].values())
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{url}/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                EXAMPLES,
                "--generation-deterministic",
                "--continue-on-failure",
                "--suppress-health-check",
                "all",
                "--request-timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    report = run.stdout[-6000:]
    assert run.returncode == 0, report
    counted = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counted is not None, report
    generated, passed = int(counted[1]), int(counted[2])
    print(f"schemathesis: {operations} operations, {generated} cases, {passed} passed")
    # every operation got at least the default run's share, whatever the setting
    assert generated == passed >= operations * min(int(EXAMPLES), 40)
    assert "Traceback" not in log.read_text(errors="replace")
