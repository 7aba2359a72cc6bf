"""Model input channels: their order in cubes, patches and the ONNX model."""

PANDA_CHANNELS = ("panda", "panda_saturated")
LANDSAT_BANDS = ("coastal", "blue", "green", "red", "nir", "swir1", "swir2")
LANDSAT_CHANNELS = LANDSAT_BANDS + ("landsat_clear_count",)
DEM_CHANNELS = ("dem",)

#: Channel order of every cube, patch and model input.
CHANNELS = PANDA_CHANNELS + LANDSAT_CHANNELS + DEM_CHANNELS
