"""Step cache keys: type, resolved parameters, input digests and the step library's version."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mlops.steps.framework import STEP_LIBRARY_VERSION


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _local_file_digest(value: str) -> str | None:
    """The digest of a local file a parameter names, so that edited input data misses."""
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    elif "://" in value:
        return None
    path = Path(value)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return None


def cache_key_for(step_type: str, params: dict[str, Any], input_digests: dict[str, str]) -> str:
    strings = _strings(params)
    files = {s: digest for s in strings if (digest := _local_file_digest(s))}
    document = {
        "type": step_type,
        "params": params,
        "inputs": {uri: input_digests[uri] for uri in strings if uri in input_digests},
        "files": files,
        "library": STEP_LIBRARY_VERSION,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
