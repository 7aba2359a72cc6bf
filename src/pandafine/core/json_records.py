"""JSON as the project writes it: canonical text for fingerprints, finite values for records."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def canonical_json(obj: Any) -> str:
    """Key-order-independent JSON text of ``obj`` (non-JSON values by ``str``): compare it, do not parse it.

    Used as the fingerprint of a training run or a study row: two runs with equal
    canonical JSON of their settings and data are the same run.
    """
    return json.dumps(obj, sort_keys=True, default=str)


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers and NaN/inf as None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
