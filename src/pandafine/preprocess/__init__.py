"""From raw files to layers on the working grid, stage by stage: :mod:`~.calibrate` (physical units,
masks, inter-calibration), :mod:`~.denoise` (Luojia cleaning, Landsat yearly composites),
:mod:`~.mosaic` (the Luojia-01 target), :mod:`~.resample` (every layer onto the working grid).
"""
