import pytest
from affine import Affine

from pandafine.core.grid import CHINA_ALBERS, Grid, grid_from_bbox, grid_from_config, snap_bounds

ANCHOR = (-2643772.86, 5926896.53)


def test_snap_bounds_outward_to_anchor_lattice():
    left, bottom, right, top = snap_bounds((1500.0, -2500.0, 3100.0, 999.0), 1000.0, (0.5, 0.25))
    assert (left, bottom, right, top) == (1000.5, -2999.75, 4000.5, 1000.25)


def test_demo_grid_is_aligned_to_panda_cells(demo_config):
    g = grid_from_config(demo_config)
    assert g.pixel_size == 125
    assert g.width % 8 == 0 and g.height % 8 == 0
    # The origin lies on the anchor lattice of 1 km cells (non-round real origin).
    for origin, anchor in ((g.transform.c, ANCHOR[0]), (g.transform.f, ANCHOR[1])):
        k = (origin - anchor) / 1000.0
        assert abs(k - round(k)) < 1e-9
    coarse = g.coarse()
    assert coarse.pixel_size == 1000 and coarse.shape == (g.height // 8, g.width // 8)
    assert coarse.bounds == pytest.approx(g.bounds)


def test_grid_covers_the_bbox(demo_config):
    from rasterio.warp import transform_bounds

    g = grid_from_config(demo_config)
    b = transform_bounds("EPSG:4326", g.crs, *demo_config["region"]["bbox"], densify_pts=21)
    assert g.bounds[0] <= b[0] and g.bounds[1] <= b[1] and g.bounds[2] >= b[2] and g.bounds[3] >= b[3]
    assert g.bounds[2] - b[2] < 1000 and b[0] - g.bounds[0] < 1000


def test_json_round_trip(tmp_path, small_grid):
    p = tmp_path / "grid.json"
    small_grid.write_json(p)
    back = Grid.read_json(p)
    assert back.same_as(small_grid) and back.factor == 8
    assert not back.same_as(Grid(small_grid.crs, small_grid.transform, 65, 48, 8))


def test_invalid_grids_rejected():
    with pytest.raises(ValueError, match="north-up"):
        Grid(CHINA_ALBERS, Affine(125, 0, 0, 0, 125, 0), 8, 8)
    with pytest.raises(ValueError, match="west<east"):
        grid_from_bbox((109, 34, 108, 35), CHINA_ALBERS, 125, 8, ANCHOR)
    with pytest.raises(ValueError, match="pixel_size"):
        grid_from_bbox((108, 34, 109, 35), CHINA_ALBERS, 0, 8, ANCHOR)


def test_bad_grid_file_names_the_file(tmp_path):
    p = tmp_path / "grid.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match="grid.json"):
        Grid.read_json(p)
