"""The token-id cache: a corpus's vocabulary and id arrays, kept on disk between starts.

Tokenising PTB takes seconds; reading three .npy files takes milliseconds. An entry is
a directory under `$RNNJAX_TOKEN_CACHE` (default `~/.cache/rnnjax/tokens`) named by
the corpus and a digest of its key: the files' SHA-256 and every option that changes
the tokens, so an edited file or a changed option never reads a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from rnnjax.data.text import SPLITS
from rnnjax.files import umask

TOKEN_CACHE_ENV = "RNNJAX_TOKEN_CACHE"
CACHE_FORMAT = 1  # bump when tokenisation changes, so stale caches are not read


def resolve_token_cache() -> Path:
    """Where entries live: `$RNNJAX_TOKEN_CACHE`, else `~/.cache/rnnjax/tokens`."""
    return Path(os.environ.get(TOKEN_CACHE_ENV) or "~/.cache/rnnjax/tokens").expanduser()


def cached_splits(name: str, key: dict, build: Callable[[], tuple[list[str], dict[str, np.ndarray]]]
                  ) -> tuple[list[str], dict[str, np.ndarray]]:
    """`build()` once per `key`; its vocabulary and arrays are kept under the token cache.

    The cache entry is a directory written under a temporary name and renamed into
    place, so a killed process never leaves a half-written entry.
    """
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True).encode()).hexdigest()
    entry = resolve_token_cache() / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:60]}-{digest[:24]}"
    if (entry / "vocab.json").is_file():
        try:
            vocab = json.loads((entry / "vocab.json").read_text())
            return vocab, {s: np.load(entry / f"{s}.npy") for s in SPLITS}
        except (OSError, ValueError, EOFError) as e:  # damaged on disk: rebuild it
            print(f"warning: token cache entry {entry} is unreadable ({type(e).__name__}); rebuilding it")
            shutil.rmtree(entry, ignore_errors=True)
    vocab, splits = build()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would hide a shared cache from the group
        for s in SPLITS:
            np.save(tmp / f"{s}.npy", splits[s])
        (tmp / "key.json").write_text(json.dumps(key, indent=1, ensure_ascii=False))
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process wrote the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # an unwritable cache only costs the next start the same work again
    return vocab, splits
