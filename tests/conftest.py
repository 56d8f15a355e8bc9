"""Shared fixtures: the real corpora in ../shared/data, never a download."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", False)

SHARED_DATA = Path(os.environ.get("RNNJAX_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ptb" / "ptb.train.txt").is_file():
        pytest.fail(f"test corpora not found at {SHARED_DATA}; set RNNJAX_TEST_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory) -> None:
    """One persistent XLA compilation cache for the session, in this process and the rnnjax
    commands tests start: they train the same tiny models many times over (test_train.py and
    test_sweep.py took 186 s with it, 206 s without, on 2 busy cores). A cache hit gives the
    executable a compile would."""
    settings = {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax_cache")),
                "jax_persistent_cache_min_compile_time_secs": 0, "jax_persistent_cache_min_entry_size_bytes": 0}
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory) -> Path:
    """One token-id cache for the whole session, so each corpus is tokenised once."""
    return tmp_path_factory.mktemp("token_cache")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path, token_cache):
    """Tests never download: the data dir is ../shared/data and Hugging Face is offline."""
    monkeypatch.setenv("RNNJAX_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("RNNJAX_TOKEN_CACHE", str(token_cache))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
