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
