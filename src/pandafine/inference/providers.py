"""onnxruntime execution providers: ask for a GPU only where one exists, and say so loudly when none is used.

onnxruntime-gpu silently falls back to the CPU when the CUDA libraries or the
device are missing (one log line). :func:`make_session` compares the providers a
session really uses with those requested and warns -- or raises, with
``require_gpu`` -- when a requested GPU provider is not in use.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

from pandafine.core.runtime import ort_session_options

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
#: Providers that need a GPU device.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider")


class ProviderWarning(RuntimeWarning):
    """A requested execution provider is not available or not in use."""


def _loud(message: str) -> None:
    log.warning(message)
    warnings.warn(message, ProviderWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Number of CUDA devices visible through the driver library (0 if no driver or no device).

    Loads ``libcuda`` with :mod:`ctypes` and calls ``cuInit`` / ``cuDeviceGetCount``;
    any failure means no usable device. ``CUDA_VISIBLE_DEVICES`` is honoured by the
    driver itself.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(0) != 0:
                return 0
            count = ctypes.c_int(0)
            if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
            return int(count.value)
        except (AttributeError, OSError):  # pragma: no cover - broken driver library
            return 0
    return 0


def gpu_available() -> bool:
    """Whether a GPU device is present (``PANDAFINE_NO_GPU=1`` forces False)."""
    if os.environ.get("PANDAFINE_NO_GPU", "") not in ("", "0"):
        return False
    return cuda_device_count() > 0


def select_providers(requested: Sequence[str], *, require_gpu: bool = False) -> list[str]:
    """The providers to pass to onnxruntime, in order, always ending with the CPU.

    A GPU provider is kept only when onnxruntime offers it
    (``onnxruntime.get_available_providers()``) and a GPU device is present;
    every dropped provider is reported by a warning (:class:`ProviderWarning`)
    and a log line.

    Parameters
    ----------
    requested : sequence of str
        Provider names in order of preference (config ``infer.providers``).
    require_gpu : bool
        Raise instead of falling back when no GPU provider can be used.

    Returns
    -------
    list of str
        E.g. ``['CUDAExecutionProvider', 'CPUExecutionProvider']`` on a GPU
        machine, ``['CPUExecutionProvider']`` elsewhere.

    Raises
    ------
    RuntimeError
        If ``require_gpu`` and no requested GPU provider is usable.
    ValueError
        If ``requested`` is empty or names an unknown provider.
    """
    import onnxruntime as ort

    requested = list(requested)
    if not requested:
        raise ValueError("no execution provider requested (infer.providers is empty); "
                         f"expected e.g. ['{CPU_PROVIDER}']")
    available = ort.get_available_providers()
    known = set(ort.get_all_providers()) if hasattr(ort, "get_all_providers") else set(available)
    unknown = [p for p in requested if p not in known and p not in GPU_PROVIDERS and p != CPU_PROVIDER]
    if unknown:
        raise ValueError(f"unknown onnxruntime execution provider(s) {unknown}; known: {sorted(known)}")
    gpu = None  # probe the device lazily, only if a GPU provider is asked for
    selected: list[str] = []
    dropped: list[str] = []
    for p in dict.fromkeys(requested):
        if p == CPU_PROVIDER:
            continue
        if p not in available:
            dropped.append(f"{p} (not offered by this onnxruntime build; available: {available})")
            continue
        if p in GPU_PROVIDERS:
            gpu = gpu_available() if gpu is None else gpu
            if not gpu:
                dropped.append(f"{p} (no GPU device found)")
                continue
        selected.append(p)
    selected.append(CPU_PROVIDER)
    if dropped:
        _loud(f"onnxruntime execution provider(s) requested {requested} but not usable: "
              f"{'; '.join(dropped)}. Inference runs on {selected}.")
    if require_gpu and not any(p in GPU_PROVIDERS for p in selected):
        raise RuntimeError(f"a GPU execution provider is required, but none of the requested {requested} "
                           f"is usable here (selected {selected}); check the CUDA installation "
                           "and onnxruntime-gpu, or drop require_gpu")
    return selected


def make_session(model_path: str | os.PathLike, requested: Sequence[str], threads: int | None = None, *,
                 require_gpu: bool = False):
    """Create an onnxruntime InferenceSession and check which providers it really uses.

    Parameters
    ----------
    model_path : path
        ONNX model file.
    requested : sequence of str
        Provider names in order of preference.
    threads : int, optional
        Intra-op threads (default: the job's budget, :func:`pandafine.core.runtime.threads`).
    require_gpu : bool
        Raise if no requested GPU provider ends up in use.

    Returns
    -------
    onnxruntime.InferenceSession

    Raises
    ------
    FileNotFoundError
        If the model file does not exist.
    RuntimeError
        If ``require_gpu`` and the session does not run on a requested GPU provider.
    """
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {model_path}")
    providers = select_providers(requested, require_gpu=require_gpu)
    options = ort_session_options()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    used = session.get_providers()
    not_used = [p for p in dict.fromkeys(requested) if p in GPU_PROVIDERS and p not in used]
    if not_used:
        _loud(f"{model_path}: GPU execution provider(s) {not_used} requested but NOT in use; "
              f"requested {list(requested)}, session uses {used}. Inference will run on the CPU.")
        if require_gpu:
            raise RuntimeError(f"{model_path}: GPU execution required, but the session uses {used} "
                               f"(requested {list(requested)})")
    log.info("%s: onnxruntime session on %s", model_path, used)
    return session
