"""A configured token never reaches the log, wherever a client puts it: a real `imagine serve`
gets each token in the query string, the path, JSON keys and values, headers and the job API's
bodies; then its whole log is searched for them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from imagine.settings import hash_token
from tests.http.live import serve_process

pytestmark = pytest.mark.slow

PLAIN = "plain-token-4f9a8c2e71"  # configured as `tokens`
HASHED = "hashed-token-b3d7e5a914"  # configured only by its digest (`token_hashes`)


def test_configured_tokens_never_reach_the_log(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = {
        "IMAGINE_TOKENS": json.dumps([PLAIN]),
        "IMAGINE_TOKEN_HASHES": json.dumps([hash_token(HASHED)]),
        "IMAGINE_DATA_DIR": str(tmp_path / "data"),
        "IMAGINE_LOG_LEVEL": "debug",
    }
    with serve_process(env, log) as (_, url):
        for token in (PLAIN, HASHED):
            auth = {"authorization": f"Bearer {token}"}
            sent = [
                httpx.get(f"{url}/health?token={token}"),
                httpx.get(f"{url}/models/{token}", headers=auth),
                httpx.get(f"{url}/models/org/{token}/info?key={token}", headers=auth),
                httpx.post(
                    f"{url}/models/imagine/shapes",
                    json={"inputs": "a red circle", token: 1, "parameters": {token: token}},
                    headers={**auth, "x-request-id": token},
                    timeout=70,
                ),
                httpx.post(
                    f"{url}/v1/models/imagine/shapes/predictions?t={token}",
                    json={"input": {"prompt": "a red circle", token: 1}, token: token},
                    headers={**auth, "prefer": "wait"},
                    timeout=70,
                ),
                httpx.get(f"{url}/metrics", headers={"authorization": "Bearer wrong-token"}),
            ]
            assert [r.status_code for r in sent] == [200, 404, 404, 200, 201, 401]
    text = log.read_text()
    assert "ignoring unknown" in text and "GET /health" in text  # the lines were logged...
    assert PLAIN not in text and HASHED not in text  # ...without the tokens
