"""Tiled inference of one year: Zarr cube -> ONNX model -> blended radiance -> COG.

The region is cut into overlapping square tiles (:mod:`pandafine.inference.blending`);
tiles go through onnxruntime in batches (with IO binding on a CUDA or TensorRT
device, :mod:`pandafine.inference.ort_run`) while a background thread reads the next
batch from the cube. The model's final output (``radiance``) is blended
with the tile windows in a band of tile rows, and each finished band is written
block by block into a temporary tiled GeoTIFF, which becomes the product COG
(:mod:`pandafine.product`). Memory is bounded by one tile row across the
region, never by the region itself.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from pandafine.core.faults import disk_full_error, gdal_write_errors
from pandafine.core.region import inside_outline, read_outline
from pandafine.core.runtime import threads
from pandafine.core.scaling import RADIANCE_UNITS
from pandafine.inference.blending import WINDOW_KINDS, TileLayout, blend_tiles, grid_tiling
from pandafine.inference.ort_run import bind_io
from pandafine.inference.providers import make_session
from pandafine.inference.tiling import iter_tile_batches, pad_block
from pandafine.models.receptive_field import RF_METADATA_KEY, overlap_warning, tile_error
from pandafine.product.cog import (
    PRODUCT_BANDS,
    product_tags,
    tiled_blocksize,
    tiled_profile,
    tiled_temporary,
    write_cog,
)
from pandafine.tiles.cube import open_cube

log = logging.getLogger(__name__)

#: Tile sides must be multiples of this (a depth-3 UNet halves the size three times).
MODEL_MULTIPLE = 8
#: Names of the model's input and output (docs/contracts.md).
MODEL_INPUT, MODEL_OUTPUT = "inputs", "radiance"
#: Channel whose nodata makes the output nodata.
MASK_CHANNEL = "panda"


@dataclass(frozen=True)
class InferParams:
    """Tiling and execution parameters (config section ``infer``)."""

    tile: int
    #: Pixels shared by neighbouring tiles.
    overlap: int
    window: str
    batch_size: int
    providers: tuple[str, ...]
    #: Samples per tile of a generative model (>1: a second band with the per-pixel spread).
    ensemble: int = 1

    def __post_init__(self) -> None:
        if self.tile < MODEL_MULTIPLE or self.tile % MODEL_MULTIPLE:
            raise ValueError(f"infer.tile: value {self.tile} must be a positive multiple of {MODEL_MULTIPLE}")
        if not float(self.overlap).is_integer() or not 0 <= self.overlap < self.tile:
            hint = (f" (infer.overlap is in pixels: {self.overlap:g} of a {self.tile} px tile is "
                    f"{round(self.tile * self.overlap)} px)" if 0 < self.overlap < 1 else "")
            raise ValueError(f"infer.overlap: value {self.overlap} must be a whole number of pixels in "
                             f"[0, infer.tile) = [0, {self.tile}){hint}")
        object.__setattr__(self, "overlap", int(self.overlap))
        if self.window not in WINDOW_KINDS:
            raise ValueError(f"infer.window: value {self.window!r} must be one of {', '.join(WINDOW_KINDS)}")
        if self.batch_size < 1:
            raise ValueError(f"infer.batch_size: value {self.batch_size} must be >= 1")
        if self.ensemble < 1:
            raise ValueError(f"infer.ensemble: value {self.ensemble} must be >= 1")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "InferParams":
        c = cfg["infer"]
        return cls(int(c["tile"]), c["overlap"], str(c["window"]), int(c["batch_size"]),
                   tuple(c["providers"]), int(c.get("ensemble", 1)))


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate over ``items`` produced by a background thread, at most ``depth`` ahead.

    Exceptions raised by the producer are re-raised in the consumer; closing the
    generator stops the producer.
    """
    if depth < 1:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as exc:  # forwarded to the consumer
            put((False, exc))
            return
        put((True, done))

    thread = threading.Thread(target=produce, name="pandafine-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def run_model(session, batch: np.ndarray, *, source: str = "model") -> np.ndarray:
    """Run one (B, C, h, w) batch; return the (B, h, w) ``radiance`` output."""
    out = session.run([MODEL_OUTPUT], {MODEL_INPUT: batch})[0]
    expected = (batch.shape[0], 1) + batch.shape[2:]
    if out.shape != expected:
        raise ValueError(f"{source}: output '{MODEL_OUTPUT}' has shape {out.shape} for input {batch.shape}; "
                         f"expected {expected}")
    return out[:, 0].astype(np.float32, copy=False)


def check_model_io(session, n_channels: int, *, source: str = "model") -> None:
    """Check the session's input/output names and channel count against the contract."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if MODEL_INPUT not in inputs:
        raise ValueError(f"{source}: model input '{MODEL_INPUT}' not found (inputs: {list(inputs)})")
    if MODEL_OUTPUT not in outputs:
        raise ValueError(f"{source}: model output '{MODEL_OUTPUT}' not found (outputs: {outputs}); "
                         "the blended product must be the model's final radiance output")
    shape = inputs[MODEL_INPUT].shape
    if len(shape) != 4:
        raise ValueError(f"{source}: input '{MODEL_INPUT}' has rank {len(shape)}; expected (B, C, H, W)")
    if isinstance(shape[1], int) and shape[1] != n_channels:
        raise ValueError(f"{source}: model expects {shape[1]} input channels, the cube has {n_channels}")


def model_metadata(session) -> dict[str, str]:
    """The ONNX model's metadata (``metadata_props``) as a dict; empty for objects without it."""
    try:
        return dict(session.get_modelmeta().custom_metadata_map)
    except AttributeError:
        return {}


def check_tile_fits_model(metadata: Mapping[str, str], params: InferParams, *, source: str = "model") -> int | None:
    """Refuse an ``infer.tile`` smaller than the model's receptive field; return the field (px) or None.

    The field is the metadata key ``pandafine.receptive_field_px`` that
    :func:`pandafine.training.export.export_onnx` measures and records
    (:mod:`pandafine.models.receptive_field`). A model without it (exported by
    an older version, or elsewhere) is accepted with a warning. An overlap too
    narrow to hide the tile edges is a warning.

    Raises
    ------
    ValueError
        If ``params.tile`` is smaller than the recorded field, or the value is not an integer.
    """
    value = metadata.get(RF_METADATA_KEY)
    if value is None:
        log.warning("%s: no receptive field in the model's metadata (%s; exported by an older pandafine or "
                    "elsewhere): infer.tile %d is not checked against it", source, RF_METADATA_KEY, params.tile)
        return None
    try:
        px = int(value)
    except ValueError:
        raise ValueError(f"{source}: metadata {RF_METADATA_KEY}={value!r} is not a number of pixels") from None
    try:
        multiple = math.lcm(int(metadata.get("pandafine.input_multiple", 1)), MODEL_MULTIPLE)
    except ValueError:
        multiple = MODEL_MULTIPLE
    error = tile_error(params.tile, px, multiple=multiple, source=source)
    if error:
        raise ValueError(f"{error} (the receptive field is the model's metadata {RF_METADATA_KEY}, measured "
                         "when it was exported)")
    note = overlap_warning(params.tile, params.overlap, px)
    if note:
        log.warning("%s: %s", source, note)
    return px


def predict_tiles(session, batches: Iterable[tuple[int, list[int], np.ndarray]], *, mask_channel: int | None = None,
                  source: str = "model", on_row=None) -> Iterator[tuple[int, int, np.ndarray]]:
    """Run batches through the model and yield ``(row, col, radiance tile)`` one tile at a time.

    Parameters
    ----------
    session : onnxruntime.InferenceSession or callable
        A session (anything with ``run(output_names, feeds)``), whose ``radiance``
        output gives (tile, tile) predictions; or a tile predictor
        ``predict(row, cols, batch) -> (B, bands, h, w)`` (e.g.
        :func:`pandafine.inference.sampling.ensemble_tile_predictor`), whose tiles are
        ``(bands, tile, tile)`` when ``bands > 1``.
    batches : iterable of (row, cols, batch)
        As from :func:`iter_tile_batches`.
    mask_channel : int, optional
        Input channel whose NaN pixels are set to NaN in the prediction. Every tile
        covering a pixel sees the same input there, so the blended output is NaN
        exactly where that channel is NaN (the accumulator ignores NaN predictions).
    source : str
        Name used in error messages.
    on_row : callable, optional
        ``on_row(row)`` is called when a tile row is complete (progress reporting).
    """
    current = None
    for row, cols, batch in batches:
        if row != current:
            if current is not None and on_row is not None:
                on_row(current)
            current = row
        if hasattr(session, "run"):
            pred = run_model(session, batch, source=source)
        else:
            pred = np.asarray(session(row, cols, batch), dtype=np.float32)
            if pred.ndim != 4 or pred.shape[0] != batch.shape[0] or pred.shape[2:] != batch.shape[2:]:
                raise ValueError(f"{source}: tile predictor returned shape {pred.shape} for a batch of "
                                 f"{batch.shape}; expected (B, bands, h, w)")
            pred = pred[:, 0] if pred.shape[1] == 1 else pred
        if mask_channel is not None:
            nodata = np.isnan(batch[:, mask_channel])
            pred = np.where(nodata if pred.ndim == 3 else nodata[:, None], np.float32(np.nan), pred)
        for k, col in enumerate(cols):
            yield row, col, pred[k]
    if current is not None and on_row is not None:
        on_row(current)


def blend_band_tiles(tiles: Iterable[tuple[int, int, np.ndarray]], layout, bands: int) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`~pandafine.inference.blending.blend_tiles` of (bands, tile, tile) tiles: yields ``(first row, (bands, rows, width))``.

    One blend per band over the same tile stream, advanced in lockstep (the
    streams are split with :func:`itertools.tee`, which holds at most one tile
    row of tiles); ``bands == 1`` is :func:`blend_tiles` of (tile, tile) tiles.
    """
    if bands == 1:
        yield from blend_tiles(tiles, layout)
        return
    def band(stream, b):  # a function, so that each generator keeps its own band index
        return ((r, c, p[b]) for r, c, p in stream)

    streams = itertools.tee(tiles, bands)
    blends = [blend_tiles(band(s, b), layout) for b, s in enumerate(streams)]
    for parts in zip(*blends):
        first = parts[0][0]
        yield first, np.stack([block for _, block in parts])


class WriteBehind:
    """Hand ``write(*args)`` calls to a background thread, at most ``depth`` waiting.

    The thread calls ``writer.write(*args)`` in order, then ``writer.close()``
    when :meth:`close` is called, so that compressing and writing one block row
    overlaps with computing the next. An exception raised by the writer is
    re-raised by the next :meth:`write` or by :meth:`close`; after
    :meth:`abort` (or an error) nothing more is written. Use it as a context
    manager: leaving the block normally closes it, leaving by an exception
    aborts it.

    Parameters
    ----------
    writer : object
        Has ``write(*args)`` and ``close()``; only the background thread uses it.
    depth : int
        Most calls queued (each holds its arguments, e.g. one block row).
    """

    _CLOSE = object()

    def __init__(self, writer, depth: int = 2) -> None:
        self._writer = writer
        self._q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pandafine-write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is self._CLOSE:
                if self._error is None and not self._aborted.is_set():
                    try:
                        self._writer.close()
                    except BaseException as exc:  # forwarded to the caller of close()
                        self._error = exc
                return
            if self._error is not None or self._aborted.is_set():
                continue  # drain without writing
            try:
                self._writer.write(*item)
            except BaseException as exc:  # forwarded to the next write()/close()
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, *args) -> None:
        """Queue one ``writer.write(*args)`` (blocks while ``depth`` calls are waiting)."""
        self._raise()
        self._q.put(args)

    def close(self) -> None:
        """Write what is queued, close the writer, wait for the thread; re-raise a writer error."""
        self._q.put(self._CLOSE)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Drop what is queued, do not close the writer, wait for the thread."""
        self._aborted.set()
        self._q.put(self._CLOSE)
        self._thread.join()

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _BlockRowWriter:
    """Collect finished rows and write them to a tiled GeoTIFF one block row at a time.

    Every internal block is written exactly once, by windows of (block x block)
    pixels; only one block row across the region is held.
    """

    def __init__(self, dst, blocksize: int | None) -> None:
        self.dst = dst
        self.width = dst.width
        self.bands = dst.count
        self.rows = blocksize or 256
        self.cols = blocksize or dst.width
        self.buf = np.empty((self.bands, self.rows, self.width), dtype=np.float32)
        self.fill = 0
        self.next_row = 0

    def write(self, first_row: int, block: np.ndarray) -> None:
        """Add rows ``first_row..``: ``block`` is (rows, width), or (bands, rows, width) for several bands."""
        if first_row != self.next_row + self.fill:
            raise RuntimeError(f"rows arrived out of order: got row {first_row}, "
                               f"expected {self.next_row + self.fill}")
        block = block[None] if block.ndim == 2 else block
        if block.shape[0] != self.bands:
            raise ValueError(f"block of {block.shape[0]} band(s) for a {self.bands}-band raster")
        i = 0
        while i < block.shape[1]:
            n = min(self.rows - self.fill, block.shape[1] - i)
            self.buf[:, self.fill:self.fill + n] = block[:, i:i + n]
            self.fill += n
            i += n
            if self.fill == self.rows:
                self._emit()

    def _emit(self) -> None:
        from rasterio.windows import Window

        for c0 in range(0, self.width, self.cols):
            c1 = min(c0 + self.cols, self.width)
            self.dst.write(self.buf[:, :self.fill, c0:c1], window=Window(c0, self.next_row, c1 - c0, self.fill))
        self.next_row += self.fill
        self.fill = 0

    def close(self) -> None:
        if self.fill:
            self._emit()


#: Product tag holding the level scale the radiance was multiplied by (:mod:`pandafine.inference.level`).
LEVEL_TAG = "level_scale"


def open_predictor(model_path: str | os.PathLike, params: InferParams, n_channels: int, *,
                   require_gpu: bool = False) -> tuple[Any, tuple[str, ...], Any, dict[str, str]]:
    """What predicts the tiles of ``model_path``: ``(session, bands, finalize, tags)``.

    An ONNX model gets an onnxruntime session on ``params.providers`` (checked against
    ``n_channels`` and the tile size, IO-bound on a GPU); a generative model's
    ``checkpoint.pt`` gets :func:`pandafine.inference.sampling.checkpoint_tile_predictor`.
    ``finalize`` (None or a function) transforms each blended block; ``tags`` go to the product.
    """
    model_path = Path(model_path)
    if model_path.suffix == ".pt":  # a generative model's checkpoint: tiled sampling in PyTorch
        from pandafine.inference.sampling import checkpoint_tile_predictor  # lazy: loads torch, only needed here

        session, bands, finalize, tags = checkpoint_tile_predictor(model_path, params.ensemble, n_channels=n_channels)
        return session, tuple(bands), finalize, dict(tags)
    if params.ensemble > 1:
        raise ValueError(f"infer.ensemble: value {params.ensemble} needs a generative model (diffusion, flow) "
                         f"and its checkpoint.pt; {model_path} is a deterministic ONNX model")
    session = make_session(model_path, params.providers, threads(), require_gpu=require_gpu)
    check_model_io(session, n_channels, source=str(model_path))
    check_tile_fits_model(model_metadata(session), params, source=str(model_path))
    return bind_io(session), tuple(PRODUCT_BANDS[:1]), None, {}  # IO binding on CUDA/TensorRT; plain run on CPUs


def check_level_scale(value, *, source: str) -> float:
    """``value`` as a float; ValueError naming ``source`` unless it is a finite number > 0."""
    try:
        scale = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: level scale {value!r} must be a finite number > 0") from exc
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{source}: level scale {scale!r} must be a finite number > 0")
    return scale


def level_finalize(finalize, scale: float):
    """``finalize`` (None or a block transform) followed by multiplying every band by ``scale``."""
    factor = np.float32(scale)

    def apply(block: np.ndarray) -> np.ndarray:
        block = block if finalize is None else finalize(block)
        return block * factor

    return apply


def predict_area(session, inputs, layout: TileLayout, params: InferParams, *, bands: int = 1, finalize=None,
                 mask_channel: int | None = None, source: str = "model") -> np.ndarray:
    """Tiled, blended prediction of ``layout``'s area, in memory: ``(bands, rows, cols)`` float32.

    ``inputs`` is the (C, H, W) grid (a cube's Zarr array or an ndarray); the tiles of the grid's
    lattice that touch the area are read with their halo, so the pixels equal those of
    :func:`infer_year` over the same area (before masking by ``region.mask``).
    """
    _, _, height, width = layout.bounds
    out = np.empty((bands, height, width), dtype=np.float32)
    tiles = predict_tiles(session, iter_tile_batches(inputs, layout, params.batch_size, source=source),
                          mask_channel=mask_channel, source=source)
    for first_row, block in blend_band_tiles(tiles, layout, bands):
        block = block if finalize is None else finalize(block)
        out[:, first_row:first_row + block.shape[-2]] = block.reshape(bands, -1, width)
    return out


def region_outside(cfg: Mapping[str, Any], grid, area: tuple[int, int, int, int]) -> np.ndarray | None:
    """Pixels of ``area`` outside the outline of ``region.mask`` (True), or None without a mask."""
    mask = cfg.get("region", {}).get("mask")
    if not mask:
        return None
    return ~inside_outline(read_outline(mask, grid.crs), grid, area)


def infer_year(cfg: Mapping[str, Any], cube_path: str | os.PathLike, model_path: str | os.PathLike,
               out_path: str | os.PathLike, *, year: int | None = None, progress: bool = True,
               require_gpu: bool = False, area: tuple[int, int, int, int] | None = None,
               level: float | None = None) -> Path:
    """Run tiled, blended inference over one year's cube and write the product COG (or one block of it).

    Parameters
    ----------
    cfg : mapping
        Validated config; uses ``infer`` (tile, overlap, window, batch_size, providers),
        ``product`` (compress, blocksize) and ``region.mask`` (pixels outside its outline are nodata).
    cube_path : path
        ``results/tiles/cube/{year}.zarr``.
    model_path : path
        ``model.onnx``: input ``inputs`` (B, C, h, w) raw channels, output ``radiance`` (B, 1, h, w).
    out_path : path
        ``results/panda_fine/PANDA-FINE_{year}.tif``; written through a temporary file and a rename.
    year : int, optional
        Product year; defaults to the cube's ``year`` attribute (they must agree if both given).
    progress : bool
        Show a tqdm bar over tile rows.
    require_gpu : bool
        Fail (RuntimeError) instead of falling back to the CPU when no requested GPU
        execution provider is in use (see :func:`pandafine.inference.providers.make_session`).
    area : (row, col, rows, cols), optional
        A spatial block of the grid (:class:`pandafine.core.blocks.Block` ``.area``): only its
        pixels are made, from the tiles of the grid's tile lattice that touch it (reading
        their halo from the cube), so they equal the same pixels of a whole-grid run.
        ``out_path`` is then a tiled GeoTIFF of the block with the product's bands and
        tags, which :func:`pandafine.product.assemble.assemble_product` joins into the COG.
    level : float, optional
        The level scale of :mod:`pandafine.inference.level` (``level.json``): every band is
        multiplied by it after blending, and the products carry it as tag ``level_scale``.

    Returns
    -------
    pathlib.Path
        ``out_path``.
    """
    import rasterio
    from rasterio.crs import CRS
    from tqdm import tqdm

    params = InferParams.from_config(cfg)
    cube = open_cube(cube_path)
    if year is None:
        if cube.year is None:
            raise ValueError(f"{cube.path}: no 'year' attribute; pass the year explicitly")
        year = cube.year
    elif cube.year is not None and int(year) != cube.year:
        raise ValueError(f"{cube.path}: cube is for year {cube.year}, but year {year} was requested")
    if MASK_CHANNEL not in cube.channels:
        raise ValueError(f"{cube.path}: channel '{MASK_CHANNEL}' missing (channels: {list(cube.channels)})")
    mask_index = cube.channels.index(MASK_CHANNEL)
    out_path = Path(out_path)
    model_path = Path(model_path)

    session, bands, finalize, extra_tags = open_predictor(model_path, params, len(cube.channels),
                                                         require_gpu=require_gpu)
    if level is not None:
        scale = check_level_scale(level, source=str(model_path))
        finalize = level_finalize(finalize, scale)
        extra_tags = {**extra_tags, LEVEL_TAG: f"{scale:.9g}"}
    tags = {**product_tags(cfg, year, model_path, input_path=cube_path), **extra_tags}

    grid = cube.grid
    height, width = grid.shape
    tile, overlap = grid_tiling(height, width, params.tile, params.overlap, MODEL_MULTIPLE)
    layout = TileLayout(height, width, tile, overlap, params.window, area=area)
    row_off, col_off, out_height, out_width = layout.bounds
    outside = region_outside(cfg, grid, layout.bounds)
    profile = tiled_profile(out_height, out_width, len(bands), CRS.from_user_input(grid.crs),
                            grid.window_transform(row_off, col_off))
    n_rows = len(layout.rows)
    log.info("%s: inferring year %s on %dx%d px at (%d, %d) of the %dx%d grid, %d x %d tiles of %d px "
             "(overlap %d px, %s window)", cube.path, year, out_height, out_width, row_off, col_off, height, width,
             n_rows, len(layout.cols), tile, overlap, params.window)
    with tiled_temporary(out_path) as tiled_tmp:
        try:
            with contextlib.ExitStack() as stack:
                # GDAL errors of a failed flush (rasterio only logs them) raised once the file is closed
                stack.enter_context(gdal_write_errors(out_path))
                bar = stack.enter_context(tqdm(total=n_rows, desc=f"infer {year}", unit="tile row",
                                               disable=not progress))
                dst = stack.enter_context(rasterio.open(tiled_tmp, "w", **profile))
                for b, name in enumerate(bands, start=1):
                    dst.set_band_description(b, name)
                    dst.set_band_unit(b, RADIANCE_UNITS)
                    dst.update_tags(b, units=RADIANCE_UNITS, quantity=name)
                dst.update_tags(**tags)
                batches = prefetch(iter_tile_batches(cube.inputs, layout, params.batch_size, source=str(cube.path)),
                                   depth=2)
                stack.callback(batches.close)
                tiles = predict_tiles(session, batches, mask_channel=mask_index, source=str(model_path),
                                      on_row=lambda _row: bar.update(1))
                # reading (prefetch), computing and writing (write-behind) overlap: three threads
                with WriteBehind(_BlockRowWriter(dst, tiled_blocksize(out_height, out_width)), depth=2) as writer:
                    for first_row, block in blend_band_tiles(tiles, layout, len(bands)):
                        block = block if finalize is None else finalize(block)
                        if outside is not None:
                            block[..., outside[first_row:first_row + block.shape[-2]]] = np.nan
                        writer.write(first_row, block)
            if area is None:
                write_cog(tiled_tmp, out_path, compress=cfg["product"]["compress"],
                          blocksize=int(cfg["product"]["blocksize"]), tags=tags)
            else:  # one block: the tiled GeoTIFF is the output
                os.replace(tiled_tmp, out_path)
        except Exception as exc:
            full = disk_full_error(exc, out_path)  # before the partial file is removed: its space counts as used
            if full is not None:
                raise full from exc
            raise
    return out_path


def infer_array(session, inputs: np.ndarray, params: InferParams) -> np.ndarray:
    """Tiled, blended inference over an in-memory (C, H, W) array (small regions, tests).

    Same tiling, padding and blending as :func:`infer_year`, without masking or files
    (:func:`predict_area` over the whole grid).
    """
    _, height, width = inputs.shape
    tile, overlap = grid_tiling(height, width, params.tile, params.overlap, MODEL_MULTIPLE)
    return predict_area(session, inputs, TileLayout(height, width, tile, overlap, params.window), params,
                        source="inputs")[0]


__all__ = ("InferParams", "LEVEL_TAG", "open_predictor", "check_level_scale", "level_finalize", "predict_area",
           "pad_block", "iter_tile_batches", "prefetch", "WriteBehind", "blend_band_tiles", "run_model",
           "check_model_io", "model_metadata", "check_tile_fits_model", "predict_tiles",
           "infer_year", "infer_array")
