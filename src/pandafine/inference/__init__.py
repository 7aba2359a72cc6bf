"""Tiled inference of a year: :mod:`~.blending` (windows, layout, accumulation), :mod:`~.tiling`
(reading tiles), :mod:`~.providers` and :mod:`~.ort_run` (onnxruntime sessions on CPU or GPU),
:mod:`~.infer` (cube -> COG), :mod:`~.sampling` (tiled sampling and ensembles of generative models).
"""
