"""Training checkpoints on disk: names, format check, atomic save and load.

Pure I/O (torch is imported where a checkpoint is read or written); building a
model from a checkpoint is :func:`pandafine.models.registry.load_trained_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pandafine.core.atomic import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"


CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def read_checkpoint(path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train_model` (tensors and plain Python values only)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (run the train stage first)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable pandafine checkpoint ({exc}); delete it to retrain") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {ck.get('format') if isinstance(ck, dict) else None!r} "
                         f"is not {CHECKPOINT_FORMAT}; delete it to retrain")
    return ck
