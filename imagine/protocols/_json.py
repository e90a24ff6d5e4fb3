"""JSON bodies for every protocol: whatever the bytes, a value or an InvalidRequest naming `body`.

json.loads raises more than JSONDecodeError on hostile input: RecursionError for nesting about
1,000 deep and a plain ValueError for an integer over 4,300 digits (both were 500s).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from imagine.errors import InvalidRequest

__all__ = ["load_json", "shown_keys"]


def load_json(text: str | bytes) -> Any:
    """The decoded value. Raises InvalidRequest(field="body") for anything that is not JSON
    this server accepts."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"body: not valid JSON ({exc.msg})", field="body") from None
    except RecursionError:
        raise InvalidRequest("body: JSON nested too deeply", field="body") from None
    except ValueError as exc:  # e.g. an integer beyond Python's 4,300-digit conversion limit
        raise InvalidRequest(f"body: not acceptable JSON ({str(exc)[:80]})", field="body") from None


def shown_keys(keys: Iterable[str], *, most: int = 20, chars: int = 40) -> str:
    """Client-sent key names for a log line: at most `most`, each cut to `chars` and escaped
    (`repr`), so a key cannot forge log lines with newlines or fill the log."""
    keys = list(keys)
    shown = ", ".join(repr(str(k)[:chars]) for k in keys[:most])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > most else "")
