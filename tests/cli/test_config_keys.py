"""Which config values each rule depends on: digests that change exactly when those values change."""

from __future__ import annotations

import copy
import re

import pytest

from pandafine.config_keys import (
    NON_PRODUCT_SECTIONS,
    RULE_CONFIG_KEYS,
    config_digest,
    download_keys,
    lookup,
    product_config,
    rule_config_digest,
)
from repo_paths import REPO


def test_every_rule_of_the_workflow_has_its_keys():
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        rules |= set(re.findall(r"(?m)^[ \t]*rule (\w+):", smk.read_text()))  # indented: inside an if
    assert rules - {"download", "download_truth"} == set(RULE_CONFIG_KEYS)
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=[ \t]*rule )", smk.read_text())[1:]:
            assert "rule_config_digest(config" in block, f"{smk.name}: {block.splitlines()[0]} has no config param"


def test_digest_follows_only_its_keys(demo_config):
    base = rule_config_digest(demo_config, "train")
    other = copy.deepcopy(demo_config)
    other["infer"]["overlap"] = 8            # not read by train
    other["ablation"]["epochs"] = 7
    assert rule_config_digest(other, "train") == base
    other["train"]["epochs"] += 1             # read by train
    assert rule_config_digest(other, "train") != base
    reordered = dict(reversed(list(demo_config.items())))
    assert rule_config_digest(reordered, "train") == base


def test_lookup_and_missing_keys(demo_config):
    assert lookup(demo_config, "grid.factor") == 8
    assert lookup(demo_config, "preprocess.min_coverage") is None   # optional, absent in the demo
    assert config_digest(demo_config, ["preprocess.min_coverage"]) == config_digest({}, ["preprocess.min_coverage"])
    assert set(product_config(demo_config)) == set(demo_config) - set(NON_PRODUCT_SECTIONS)


def test_download_keys_follow_the_source_kind(demo_config):
    assert "synthetic" in download_keys(demo_config, "panda")
    cfg = copy.deepcopy(demo_config)
    cfg["sources"]["dem"] = {"kind": "http"}
    assert "download" in download_keys(cfg, "dem") and "synthetic" not in download_keys(cfg, "dem")
    with pytest.raises(ValueError, match="needs its layer"):
        rule_config_digest(cfg, "download")
    with pytest.raises(ValueError, match="no entry"):
        rule_config_digest(cfg, "no_such_rule")
