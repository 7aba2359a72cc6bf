"""Learning from the patches and packaging the result: :mod:`~.train` (resumable, deterministic),
:mod:`~.evaluate` (test split against the interpolation baseline), :mod:`~.export` (ONNX, checked
against PyTorch), :mod:`~.quantize` (fp16 / int8 copies).
"""
