import json

import numpy as np
import pytest

from pandafine.core.raster_io import write_raster
from pandafine.preprocess.landsat_composite import LandsatCoverage
from pandafine.product.report import build_report, metrics_rows, raster_total, year_map, yearly_totals


def test_raster_total_ignores_nodata(tmp_path, small_grid):
    a = np.full(small_grid.shape, 2.0, np.float32)
    a[0, :10] = np.nan
    p = write_raster(tmp_path / "a.tif", a, small_grid, nodata=np.nan)
    total, n = raster_total(p)
    assert n == a.size - 10 and total == pytest.approx(2.0 * n)


def test_yearly_totals_relative_series(tmp_path, small_grid):
    prods, panda = {}, {}
    for k, year in enumerate((2000, 2001, 2002), start=1):
        prods[year] = write_raster(tmp_path / f"PANDA-FINE_{year}.tif", np.full(small_grid.shape, k, np.float32),
                                   small_grid, nodata=np.nan)
        panda[year] = write_raster(tmp_path / f"{year}.tif", np.full(small_grid.shape, 10.0 * k, np.float32),
                                   small_grid, nodata=np.nan)
    rows = yearly_totals(prods, panda)
    assert [r["year"] for r in rows] == [2000, 2001, 2002]
    assert [r["product_relative_radiance"] for r in rows] == pytest.approx([0.5, 1.0, 1.5])
    assert [r["panda_relative_dn"] for r in rows] == pytest.approx([0.5, 1.0, 1.5])
    assert year_map(prods.values()) == prods


def test_build_report_writes_every_figure(tmp_path, small_grid):
    prods = {y: write_raster(tmp_path / f"PANDA-FINE_{y}.tif",
                             np.random.default_rng(y).random(small_grid.shape, dtype=np.float32) * 1e-4,
                             small_grid, nodata=np.nan) for y in (2018, 2019)}
    hist = tmp_path / "history.csv"
    hist.write_text("epoch,train_loss,val_psnr_log,lr,seconds\n1,0.2,20.0,0.002,1.0\n2,0.1,25.0,0.001,1.0\n")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"test_split": {"data_range": {"log": 3.0},
                                                  "model": {"psnr_log_db": 30.0, "ssim_log": 0.9},
                                                  "interpolation": {"psnr_log_db": 25.0, "ssim_log": 0.5}}}))
    assert [r["method"] for r in metrics_rows(json.loads(metrics.read_text()))] == ["model", "interpolation"]
    landsat = {}
    for y, (clear, valid) in {2018: (0.5, 1.0), 2019: (0.25, 0.95)}.items():
        landsat[y] = write_raster(tmp_path / f"{y}.tif", np.zeros(small_grid.shape, np.float32), small_grid,
                                  tags=LandsatCoverage(y, 3, clear, valid).tags() | {"year": y})
    out = build_report(prods, prods, hist, metrics, tmp_path / "report", landsat=landsat)
    for p in out:
        assert p.is_file() and p.stat().st_size > 0
    assert (tmp_path / "report" / "landsat_coverage.csv").read_text().splitlines() == [
        "year,scenes,clear_percent,valid_percent", "2018,3,50,100", "2019,3,25,95"]
    assert (tmp_path / "report" / "metrics.csv").read_text().splitlines()[1].startswith("model,30")
    page = (tmp_path / "report" / "metrics.html").read_text()
    assert "<td>model</td>" in page and '<td class="num">30</td>' in page and "log: 3" in page
    with pytest.raises(ValueError, match="4-digit year"):
        year_map([tmp_path / "nothing.tif"])


def test_level_note_states_the_scale_and_the_test_split_in_context():
    from pandafine.product.report import level_note

    level = {"method": "pooled", "scale": 1.0883,
             "pooled": {"test": {"ratio": 0.9059, "ratio_scaled": 0.9859, "n_pixels": 10}},
             "test_brightest_1pct_error": {"before": -0.2195, "after": -0.1506}}
    note = level_note(level)
    assert "level scale 1.0883" in note
    assert "total light ratio 0.906 before, 0.986 after" in note
    assert "brightest-1 % error -0.220 before, -0.151 after" in note
    assert level_note({"method": "none", "scale": 1.0}) == "The products are not rescaled (infer.level: none; scale 1)."


def test_html_table_escapes_cells_and_aligns_numbers(tmp_path):
    from html.parser import HTMLParser

    from pandafine.product.report import csv_to_html, html_table

    page = html_table(["name", "psnr"], [["<b>UNet</b> & co", "31.5"], ["interp", ""]], title="T <1>",
                      notes=["a < b"])
    assert "<b>UNet</b>" not in page and "&lt;b&gt;UNet&lt;/b&gt; &amp; co" in page
    assert "<title>T &lt;1&gt;</title>" in page and "<p>a &lt; b</p>" in page

    class Cells(HTMLParser):  # the table read back: header, rows, numeric cells
        def __init__(self):
            super().__init__()
            self.rows, self.num, self.tags, self.in_cell = [], [], set(), False

        def handle_starttag(self, tag, attrs):
            self.tags.add(tag)
            if tag == "tr":
                self.rows.append([])
            if tag in ("td", "th"):
                self.rows[-1].append("")
                self.num.append(dict(attrs).get("class") == "num")
                self.in_cell = True

        def handle_endtag(self, tag):
            self.in_cell = self.in_cell and tag not in ("td", "th")

        def handle_data(self, data):
            if self.in_cell:
                self.rows[-1][-1] += data

    cells = Cells()
    cells.feed(page)
    assert cells.rows == [["name", "psnr"], ["<b>UNet</b> & co", "31.5"], ["interp", ""]]
    assert cells.num == [False, False, False, True, False, False]
    assert not cells.tags & {"script", "link", "img", "iframe"}  # self-contained, nothing to load

    csv_path = tmp_path / "t.csv"
    csv_path.write_text('row,name\n1,"a, b"\n')
    out = csv_to_html(csv_path, tmp_path / "t.html", title="t")
    cells = Cells()
    cells.feed(out.read_text())
    assert cells.rows == [["row", "name"], ["1", "a, b"]]
    with pytest.raises(ValueError, match="do not have 2 cells"):
        html_table(["a", "b"], [["1"]], title="bad")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv"):
        csv_to_html(tmp_path / "empty.csv", tmp_path / "e.html", title="e")


def test_landsat_block_coverage_table_and_figure(tmp_path):
    from pandafine.product.report import landsat_block_rows, landsat_coverage_figure

    records = []
    for y, block, read, resumed, outside, clear in ((2019, "r000c001", 3, 0, 1, 0.5), (2018, "r000c000", 2, 1, 0, 0.9),
                                                    (2018, "r000c001", 0, 0, 4, 0.0)):
        p = tmp_path / str(y) / f"{block}.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps({"year": y, "block": block, "read": read, "resumed": resumed, "outside": outside,
                                 "clear_coverage": clear, "scenes": []}))
        records.append(p)
    rows = landsat_block_rows(records)
    assert [(r["year"], r["block"], r["scenes"], r["outside"], r["clear_percent"]) for r in rows] == [
        (2018, "r000c000", 3, 0, 90.0), (2018, "r000c001", 0, 4, 0.0), (2019, "r000c001", 3, 1, 50.0)]
    png = landsat_coverage_figure(rows, tmp_path / "cov.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = landsat_coverage_figure(rows[:1], tmp_path / "one.png")  # a single block: bars per year
    assert one.stat().st_size > 0
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a Landsat block record"):
        landsat_block_rows([bad])
