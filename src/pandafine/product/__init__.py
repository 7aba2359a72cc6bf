"""The yearly product and its metadata: :mod:`~.cog` (Cloud-Optimized GeoTIFF and its tags),
:mod:`~.catalog` (STAC), :mod:`~.provenance` (record and verify), :mod:`~.report` (figures and tables).
"""
