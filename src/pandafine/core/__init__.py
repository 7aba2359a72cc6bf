"""Foundations every room uses: the working grid and its windows, channels, the radiance scale,
metrics, GeoTIFF I/O, atomic writes, checksums and JSON records, thread budgets. Imports no other room.
"""
