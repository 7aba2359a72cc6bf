"""The demo's synthetic world: :mod:`~pandafine.synthetic.scene` holds the hidden true scene and the
simulated sensors that observe it (PANDA, Landsat, Luojia-01, DEM), as arrays; the ``synthetic``
source (:mod:`pandafine.sources.synthetic`) writes them in the real products' formats.
"""
