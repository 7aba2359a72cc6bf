"""Data sources: where each layer's raw files come from.

One module per source kind (``sources.{layer}.kind`` in the config):
:mod:`~pandafine.sources.synthetic` (the demo scene, written in the real
products' formats), :mod:`~pandafine.sources.local` (files on disk),
:mod:`~pandafine.sources.http` (URL templates) and :mod:`~pandafine.sources.stac`
(Landsat from a STAC API); :mod:`~pandafine.sources.registry` maps a kind to its
downloader. Shared machinery: :mod:`~pandafine.sources.fetch` (the robust HTTP
fetcher), :mod:`~pandafine.sources.manifest` (``manifest.json``) and
:mod:`~pandafine.sources.dem` (DEM tile names and URL templates).
"""
