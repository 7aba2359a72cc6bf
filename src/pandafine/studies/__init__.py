"""Measurements about the models, not stages of the product: :mod:`~.ablation`, :mod:`~.design_space`,
:mod:`~.precision`, :mod:`~.headroom`, :mod:`~.temporal`; :mod:`~.tables` formats their tables.
"""
