"""The China config: its outline plans only the blocks of the bbox that touch China."""

from __future__ import annotations

from rasterio.warp import transform

from pandafine.config import load_config
from pandafine.core.blocks import grid_blocks
from pandafine.core.grid import grid_from_config
from pandafine.core.region import plan_blocks
from repo_paths import REPO


def block_of(grid, block, lon, lat):
    (x,), (y,) = transform("EPSG:4326", grid.crs, [lon], [lat])
    col, row = ~grid.transform * (x, y)
    return f"r{int(row) // block:03d}c{int(col) // block:03d}"


def test_china_config_plans_the_blocks_touching_china(monkeypatch):
    monkeypatch.chdir(REPO)  # region.mask is relative to the working directory, the repository root
    cfg = load_config(REPO / "workflow" / "configs" / "china.yaml")
    grid = grid_from_config(cfg)
    block = cfg["grid"]["block"]
    planned = {b.name for b in plan_blocks(cfg, grid)}
    every = {b.name for b in grid_blocks(grid, block)}
    assert planned < every and 40 <= len(planned) <= 0.6 * len(every)
    for lon, lat in [(116.40, 39.90), (121.47, 31.23), (87.62, 43.83), (91.11, 29.65), (109.5, 18.25),
                     (126.64, 45.76), (108.94, 34.34)]:  # Beijing, Shanghai, Urumqi, Lhasa, Sanya, Harbin, Xi'an
        assert block_of(grid, block, lon, lat) in planned, (lon, lat)
    for lon, lat in [(134.0, 53.0), (75.0, 20.0), (133.0, 22.0)]:  # Russia's Far East, the Indian Ocean, the Pacific
        assert block_of(grid, block, lon, lat) not in planned, (lon, lat)
