"""Conventions of the real products, as pure functions: Landsat Collection-2 Level-2 (bands, QA bits,
scale/offset, TM/ETM+ -> OLI harmonization), Luojia-01 (DN -> radiance, frame metadata, footprint).
"""
