import subprocess
import sys

import pytest
import yaml

from pandafine.cli import build_parser, main

STAGES = ["check-config", "download", "calibrate", "landsat-block", "denoise", "mosaic", "resample", "cube", "patches",
          "train", "evaluate", "export", "level", "infer", "assemble", "report", "report-table", "catalog", "verify", "ablation",
          "temporal", "fidelity", "report-fidelity", "quantize", "precision", "design-space",
          "uncertainty"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as exc:
        main([stage, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--threads" in out


def test_parser_knows_every_stage():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(STAGES)


def test_check_config_reports_the_key(tmp_path, tiny_config, capsys):
    tiny_config["run"]["last_year"] = 2031
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_config))
    assert main(["check-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "run.last_year" in err and "2031" in err and "bad.yaml" in err


def test_check_config_writes_grid(tmp_path, tiny_config_path):
    out = tmp_path / "grid.json"
    assert main(["check-config", "--config", str(tiny_config_path), "--grid-out", str(out)]) == 0
    from pandafine.core.grid import Grid

    assert Grid.read_json(out).pixel_size == 125


def test_threads_cap_reaches_the_libraries(tmp_path, tiny_config_path):
    """--threads sets every thread pool of the process (env vars are set before numpy loads)."""
    code = ("import os, sys; from pandafine.cli import main; from pandafine.core import runtime;"
            "main(['check-config', '--config', sys.argv[1], '--threads', '1']);"
            "import torch; runtime.configure_torch();"
            "print(os.environ['OMP_NUM_THREADS'], os.environ['GDAL_NUM_THREADS'], torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_config_path)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-3:] == ["1", "1", "1"]
