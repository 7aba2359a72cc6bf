import copy

import pytest

from pandafine.config import ConfigError, config_hash, load_config, validate_config, years
from repo_paths import REPO


def test_demo_config_is_valid(demo_config):
    validate_config(demo_config)
    assert years(demo_config) == list(range(1984, 2021))


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.update(unknown_key=1), "unknown_key"),
    (lambda c: c["run"].update(first_year=1980), "run.first_year"),
    (lambda c: c["run"].update(last_year=2021), "run.last_year"),
    (lambda c: c["grid"].update(pixel_size=0), "grid.pixel_size"),
    (lambda c: c["grid"].update(pixel_size=-125), "grid.pixel_size"),
    (lambda c: c["infer"].update(window="triangle"), "infer.window"),
    (lambda c: c["tiles"].update(patch=60), "tiles.patch"),
    (lambda c: c["tiles"].update(halo=12), "tiles.halo"),
    (lambda c: c["tiles"].update(halo=-8), "tiles.halo"),
    (lambda c: c["run"].update(target_years=[2021]), "run.target_years"),
    (lambda c: c["grid"].update(colour="red"), "grid.colour"),
])
def test_bad_config_names_the_key(demo_config, mutate, key):
    cfg = copy.deepcopy(demo_config)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert key in str(err.value)


def test_first_after_last_is_an_error(demo_config):
    cfg = copy.deepcopy(demo_config)
    cfg["run"].update(first_year=2020, last_year=2010, target_years=[2010])
    with pytest.raises(ConfigError, match="run.first_year"):
        validate_config(cfg)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_config_hash_ignores_key_order(demo_config):
    reordered = dict(reversed(list(copy.deepcopy(demo_config).items())))
    assert config_hash(reordered) == config_hash(demo_config)
    changed = copy.deepcopy(demo_config)
    changed["run"]["seed"] += 1
    assert config_hash(changed) != config_hash(demo_config)


def test_workflow_schema_is_the_package_schema():
    import json

    from pandafine.config import schema

    wf = REPO / "workflow" / "schemas" / "config.schema.json"
    assert json.loads(wf.read_text()) == schema()
