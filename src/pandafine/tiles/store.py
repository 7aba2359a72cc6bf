"""Read access to the training patches of ``train.zarr`` (:class:`PatchStore`).

Training, evaluation, export calibration and the studies all read patches
through this one class; it knows the store's layout (docs/contracts.md, section
tile) and nothing about models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

#: The splits, in the order of their codes in ``train.zarr``'s ``split`` array (0 train, 1 val, 2 test).
SPLIT_NAMES = ("train", "val", "test")
#: Split name -> code.
SPLITS = {name: code for code, name in enumerate(SPLIT_NAMES)}


#: Patch stores up to this size are read into memory once; larger ones batch by batch.
DEFAULT_MEMORY_LIMIT = 2 * 1024**3


class PatchStore:
    """Read access to ``train.zarr`` (contract: docs/contracts.md, section tile).

    Parameters
    ----------
    path : path-like
        The ``train.zarr`` group.
    memory_limit : int
        Stores whose ``inputs`` + ``target`` take at most this many bytes are read
        into memory once; larger ones are read batch by batch.
    """

    def __init__(self, path, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        import zarr

        self.path = Path(path)
        try:
            group = zarr.open_group(str(self.path), mode="r")
        except Exception as exc:  # zarr raises several types for a missing/invalid store
            raise FileNotFoundError(f"{self.path}: cannot open the training patches as a Zarr group: {exc}") from exc
        missing = [k for k in ("inputs", "target", "split") if k not in group]
        if missing:
            raise ValueError(f"{self.path}: missing array(s) {', '.join(missing)}; expected inputs (N, C, P, P), "
                             "target (N, 1, P, P), split (N,)")
        self._inputs, self._target = group["inputs"], group["target"]
        n, c, p, q = self._inputs.shape if self._inputs.ndim == 4 else (None,) * 4
        if n is None or p != q:
            raise ValueError(f"{self.path}: array 'inputs' has shape {self._inputs.shape}; expected (N, C, P, P)")
        if tuple(self._target.shape) != (n, 1, p, p):
            raise ValueError(f"{self.path}: array 'target' has shape {self._target.shape}; expected {(n, 1, p, p)}")
        self.split = np.asarray(group["split"][:]).astype(np.int8)
        if self.split.shape != (n,):
            raise ValueError(f"{self.path}: array 'split' has shape {self.split.shape}; expected ({n},)")
        bad = sorted(set(np.unique(self.split).tolist()) - set(SPLITS.values()))
        if bad:
            raise ValueError(f"{self.path}: array 'split' holds codes {bad}; expected 0 (train), 1 (val), 2 (test)")
        attrs = dict(group.attrs)
        self.channels = [str(ch) for ch in attrs.get("channels", [])]
        if len(self.channels) != c:
            raise ValueError(f"{self.path}: attribute 'channels' lists {len(self.channels)} names "
                             f"but 'inputs' has {c} channels")
        norm = attrs.get("normalization")
        if not isinstance(norm, Mapping) or len(norm.get("mean", [])) != c or len(norm.get("std", [])) != c:
            raise ValueError(f"{self.path}: attribute 'normalization' must be {{'mean': [{c} values], "
                             f"'std': [{c} values]}}, got {norm!r}")
        self.normalization = {"mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]}
        self.patch = int(p)
        self.halo = int(attrs.get("halo", 0) or 0)
        if self.halo < 0 or self.patch - 2 * self.halo < 1:
            raise ValueError(f"{self.path}: attribute 'halo' is {self.halo}; expected 0 <= halo < patch / 2 "
                             f"for patches of {self.patch} px")
        #: Edge of the supervised centre of each patch (``patch`` less the halo on both sides).
        self.core = self.patch - 2 * self.halo
        self.n_channels = int(c)
        self.attrs = attrs
        self.extra = {k: np.asarray(group[k][:]) for k in ("year", "row", "col") if k in group}
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        if (self._inputs.nbytes + self._target.nbytes) <= memory_limit:
            self._cache = (np.asarray(self._inputs[:], dtype=np.float32),
                           np.asarray(self._target[:], dtype=np.float32))

    def __len__(self) -> int:
        return int(self.split.shape[0])

    def indices(self, split: str) -> np.ndarray:
        """Sorted patch indices of one split (``train``, ``val`` or ``test``)."""
        return np.flatnonzero(self.split == SPLITS[split])

    def _read(self, which: int, idx: np.ndarray) -> np.ndarray:
        if self._cache is not None:
            return self._cache[which][idx]
        arr = self._inputs if which == 0 else self._target
        uniq, inverse = np.unique(idx, return_inverse=True)  # zarr reads sorted, unique indices
        return np.asarray(arr.oindex[uniq], dtype=np.float32)[inverse]

    def read(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs (k, C, P, P), target (k, 1, P, P))`` float32 for the patch indices ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        return self._read(0, idx), self._read(1, idx)

    def iter_batches(self, idx, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(indices, inputs, target)`` for consecutive batches of ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        for start in range(0, idx.size, batch_size):
            sel = idx[start:start + batch_size]
            x, t = self.read(sel)
            yield sel, x, t

    def read_target(self, idx) -> np.ndarray:
        """Target radiance ``(k, 1, P, P)`` of the patch indices ``idx``."""
        return self._read(1, np.asarray(idx, dtype=np.int64))

    def with_target(self, idx) -> np.ndarray:
        """The subset of ``idx`` whose patches have at least one finite target pixel."""
        idx = np.asarray(idx, dtype=np.int64)
        keep = np.zeros(idx.size, dtype=bool)
        for start in range(0, idx.size, 256):
            t = self.read_target(idx[start:start + 256])
            keep[start:start + 256] = np.isfinite(t).reshape(len(t), -1).any(axis=1)
        return idx[keep]

    def fingerprint(self) -> dict[str, Any]:
        """What identifies these patches for resuming: shapes, channels, normalization, split and offsets."""
        h = hashlib.sha256(self.split.tobytes())
        for k in ("year", "row", "col"):
            if k in self.extra:
                h.update(np.ascontiguousarray(self.extra[k]).tobytes())
        return {"n": len(self), "n_channels": self.n_channels, "patch": self.patch, "channels": self.channels,
                "normalization": self.normalization, "split_sha256": h.hexdigest()}
