"""Running an onnxruntime session through IO binding on the provider's device.

With the CUDA or TensorRT execution provider, a plain ``session.run`` copies
every input from host memory and every output back on each call, allocating
both anew. :class:`BoundSession` binds the input to a device buffer that is
allocated once per batch shape and refilled in place (one host-to-device copy),
lets the model write its output on the device, and copies only that output back.
It offers the session's ``run(output_names, feeds)``, so the tiling code does not
know which one it drives.

On the CPU the plain run is kept (:func:`bind_io` returns the session itself):
there is no device copy to save, and the bound path was not faster there
(``tests/benchmarks/bench_infer.py --iobinding``). The bound path itself runs on
the CPU too (device ``"cpu"``), which is how it is tested without a GPU.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: onnxruntime device of the execution providers whose memory IO binding addresses.
BINDING_DEVICES = {"TensorrtExecutionProvider": "cuda", "CUDAExecutionProvider": "cuda"}


def binding_device(session) -> str | None:
    """The device to bind IO on: ``"cuda"`` when the session's first provider is CUDA or TensorRT, else None."""
    providers = session.get_providers()
    return BINDING_DEVICES.get(providers[0]) if providers else None


class BoundSession:
    """An InferenceSession run with IO binding on one device, behind ``run(output_names, feeds)``.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
    device : str
        onnxruntime device name (``"cuda"``, or ``"cpu"`` for tests).
    device_id : int
        Device index.

    Notes
    -----
    One input buffer per input name is kept on the device and reallocated only
    when the batch shape or dtype changes (e.g. the last, shorter batch of a tile
    row). Outputs are allocated by onnxruntime on the device and copied to host
    numpy arrays, in the order of ``output_names``. Not thread-safe.
    """

    def __init__(self, session, device: str = "cuda", device_id: int = 0) -> None:
        self.session = session
        self.device = device
        self.device_id = int(device_id)
        self._binding = session.io_binding()
        self._buffers: dict[str, object] = {}

    def _input(self, name: str, array: np.ndarray):
        import onnxruntime as ort

        array = np.ascontiguousarray(array)
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape()) != array.shape or buf.data_type() != _ort_type(array.dtype):
            buf = ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id)
            self._buffers[name] = buf
        else:
            buf.update_inplace(array)  # host -> device copy into the existing buffer
        return buf

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model on ``feeds`` (numpy arrays); return the named outputs as numpy arrays."""
        names = list(output_names) if output_names else [o.name for o in self.session.get_outputs()]
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, self._input(name, array))
        for name in names:
            binding.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def get_providers(self):
        return self.session.get_providers()


def _ort_type(dtype: np.dtype) -> str:
    """onnxruntime's name of a numpy dtype, as ``OrtValue.data_type()`` reports it (e.g. ``tensor(float)``)."""
    names = {np.dtype(np.float32): "float", np.dtype(np.float16): "float16", np.dtype(np.float64): "double",
             np.dtype(np.int64): "int64", np.dtype(np.int32): "int32", np.dtype(np.uint8): "uint8",
             np.dtype(np.int8): "int8", np.dtype(np.bool_): "bool"}
    return f"tensor({names.get(np.dtype(dtype), str(dtype))})"


def bind_io(session):
    """``session`` wrapped in a :class:`BoundSession` when it runs on CUDA or TensorRT, else ``session`` itself."""
    device = binding_device(session)
    if device is None:
        return session
    log.info("onnxruntime IO binding on %s (providers %s)", device, session.get_providers())
    return BoundSession(session, device)


__all__ = ("BINDING_DEVICES", "binding_device", "BoundSession", "bind_io")
