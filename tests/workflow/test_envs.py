"""The conda environment of the rules pins the same versions as pyproject.toml."""

import re
import tomllib

import yaml

from repo_paths import REPO


def test_conda_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = dict(re.match(r"([A-Za-z0-9_.-]+)==(.+)", d).groups() for d in project["dependencies"])
    env = yaml.safe_load((REPO / "envs" / "pandafine.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = dict(re.match(r"([A-Za-z0-9_.-]+)==(.+)", d).groups() for d in pip if "==" in d)
    assert env_pins == pins
    assert any(d == f"python={project['requires-python'].split('>=')[1].split(',')[0]}"
               for d in env["dependencies"] if isinstance(d, str))


def test_every_rule_declares_threads_memory_and_env():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for block in re.split(r"\nrule ", "\n" + text)[1:]:
            name = block.split(":")[0]
            assert "threads:" in block, f"{smk.name}: rule {name} declares no threads"
            assert "mem_mb=" in block, f"{smk.name}: rule {name} declares no mem_mb"
            assert "conda:" in block, f"{smk.name}: rule {name} names no conda env"
