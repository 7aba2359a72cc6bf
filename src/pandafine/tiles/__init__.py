"""Model-ready data in Zarr: :mod:`~.cube` (per-year inference cubes), :mod:`~.patches` (training
patches with a seeded, spatially blocked split) and :mod:`~.store` (:class:`PatchStore`, how
everything downstream reads the patches).
"""
