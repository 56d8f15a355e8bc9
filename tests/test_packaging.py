"""A non-editable install ships configs/ as rnnjax.configs, and `--config NAME[:PRESET]` finds it there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from rnnjax import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args, "--no-index", "--no-deps"], check=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel --no-build-isolation` builds from a copy of the files the build reads.

    A copy, so setuptools' build/ and rnnjax.egg-info stay out of the checkout and no stale build/lib
    from an earlier build can hide a file missing from the package list. --check-build-dependencies:
    an environment whose setuptools is older than [build-system] requires fails saying so (setuptools
    before 70.1 without the `wheel` package would otherwise fail with "invalid command 'bdist_wheel'").
    """
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("rnnjax", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", "--no-build-isolation", "--check-build-dependencies", "-w", str(tmp / "dist"), str(src))
    (path,) = (tmp / "dist").glob("rnnjax-*.whl")
    return path


def test_wheel_ships_every_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"rnnjax/configs/quickstart.py", "rnnjax/configs/ptb.py", "rnnjax/configs/sweeps/quick.py"} <= names
    assert sorted(set(CONFIG_FILES) - {n.removeprefix("rnnjax/configs/") for n in names}) == []
    assert not [n for n in names if n.startswith("configs/")]  # inside rnnjax, not a top-level package


def test_installed_wheel_finds_shipped_configs(wheel, tmp_path):
    site, cwd = tmp_path / "site", tmp_path / "cwd"
    cwd.mkdir()
    _pip("install", "--target", str(site), str(wheel))
    script = textwrap.dedent("""
        import json
        import rnnjax
        from rnnjax import cli, config
        spec = config.shipped_config_path("ptb:small")
        try:
            config.load("ptbb")
        except config.ConfigError as e:
            unknown = str(e)
        print(json.dumps({"rnnjax": rnnjax.__file__, "spec": spec,
                          "hidden_size": config.load(spec).model.hidden_size,
                          "quickstart_steps": config.resolve("quickstart", {"train.max_steps": "5"}).train.max_steps,
                          "sweep": config.load(config.shipped_config_path("sweeps/quick")).model.hidden_size,
                          "unknown": unknown}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["rnnjax"] == str(site / "rnnjax" / "__init__.py")
    assert out["spec"] == f"{site / 'rnnjax' / 'configs' / 'ptb.py'}:small"
    assert (out["hidden_size"], out["quickstart_steps"], out["sweep"]) == (200, 5, 64)
    assert out["unknown"].startswith("config file 'ptbb' not found; shipped configs: charrnn, echo, ptb, quickstart")


def test_a_path_is_used_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_lib.shipped_config_path("configs/ptb.py:medium") == "configs/ptb.py:medium"
    assert config_lib.shipped_config_path("missing.py") == "missing.py"
    (tmp_path / "ptb").write_text("")  # an existing path wins over the shipped config of that name
    assert config_lib.shipped_config_path("ptb:small") == "ptb:small"


def test_a_name_is_the_shipped_config():
    path = Path(config_lib.shipped_config_path("quickstart"))
    assert path.name == "quickstart.py" and path.read_bytes() == (ROOT / "configs" / "quickstart.py").read_bytes()
    sweep = Path(config_lib.shipped_config_path("sweeps/quick"))
    assert sweep.read_bytes() == (ROOT / "configs" / "sweeps" / "quick.py").read_bytes()


def test_a_name_with_a_preset_keeps_the_preset():
    spec = config_lib.shipped_config_path("ptb:large")
    path, _, preset = spec.partition(":")
    assert preset == "large" and Path(path).read_bytes() == (ROOT / "configs" / "ptb.py").read_bytes()
    assert config_lib.load(spec).model.hidden_size == 1500


def test_an_unknown_name_is_left_as_given_and_load_lists_the_shipped_names():
    assert config_lib.shipped_config_path("ptbb") == "ptbb"
    assert config_lib.shipped_config_path("ptbb:small") == "ptbb:small"
    shipped = sorted(f.removesuffix(".py") for f in CONFIG_FILES if f.endswith(".py") and not f.endswith("__init__.py"))
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.load("ptbb:small")
    assert str(e.value) == f"config file 'ptbb' not found; shipped configs: {', '.join(shipped)}"
    for spec in ("nowhere/ptbb", "ptbb.py"):  # a mistyped path: no list of names
        with pytest.raises(config_lib.ConfigError, match=f"^config file '{spec}' not found$"):
            config_lib.load(spec)
