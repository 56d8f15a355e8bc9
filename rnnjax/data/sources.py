"""The user's own corpora: `text:PATH` (a file or a directory) and `hub:NAME[:CONFIG]` (Hugging Face).

Not in the registry: nothing to fetch and no checksums to hold them to. The token cache
is keyed by the files' SHA-256 (for text:) or the datasets' fingerprints (for hub:).
"""

from __future__ import annotations

import os
from pathlib import Path

from rnnjax.config import ConfigDict
from rnnjax.data.cache import cached_splits
from rnnjax.data.corpus import Corpus
from rnnjax.data.fetch import file_sha256
from rnnjax.data.text import SPLITS, join_lines, make_splits, read_texts, split_fractions, word_tokens
from rnnjax.errors import ConfigError, DataError


def load_text(spec: str, config: ConfigDict) -> Corpus:
    """`text:PATH`: one file (split by fractions) or a directory (given splits, else all *.txt)."""
    name, d = f"text:{spec}", config.data
    level = d.text_level
    if level not in ("word", "char"):
        raise ConfigError(f"config key 'data.text_level' = {level!r}: expected 'word' or 'char'")
    root = Path(spec).expanduser()
    if root.is_dir():
        given = {s: root / f"{s}.txt" for s in SPLITS}
        if given["train"].is_file():
            files = {s: [p] for s, p in given.items()}
        else:
            txts = sorted(p for p in root.glob("*.txt") if p.is_file())
            if not txts:
                raise DataError(f"corpus {name!r}: directory {root} holds no train.txt and no *.txt files")
            files = {"train": txts}
    elif root.is_file():
        files = {"train": [root]}
    else:
        raise DataError(f"corpus {name!r}: {root} is neither a file nor a directory")
    for s, ps in files.items():
        for p in ps:
            if not p.is_file():
                raise DataError(f"corpus {name!r}: file {p} not found (a directory with train.txt needs "
                                f"valid.txt and test.txt too)")
    sums = {s: [file_sha256(p) for p in ps] for s, ps in files.items()}
    key = {"corpus": "text", "sha256": sums, "encoding": d.encoding, "level": level, "char_oov": d.char_oov,
           "fractions": list(d.split_fractions) if len(files) == 1 else None}
    tokenize = word_tokens if level == "word" else list

    def build():
        texts = read_texts(files, d.encoding, name)
        if len(files) == 1:
            tokens = split_fractions(tokenize(texts["train"]), d.split_fractions)
            where = dict.fromkeys(SPLITS, ", ".join(map(str, files["train"])))
        else:
            tokens = {s: tokenize(t) for s, t in texts.items()}
            where = {s: str(ps[0]) for s, ps in files.items()}
        return make_splits(tokens, level, config, where)

    vocab, splits = cached_splits(f"text-{root.name}", key, build)
    per_split = files if len(files) == 3 else dict.fromkeys(SPLITS, files["train"])
    return Corpus(name, level, vocab, splits, files={s: tuple(map(str, ps)) for s, ps in per_split.items()})


def load_hub(spec: str, config: ConfigDict) -> Corpus:
    """`hub:NAME[:CONFIG]`: a hub dataset's text column; its train/validation/test splits if it has them."""
    name, d = f"hub:{spec}", config.data
    repo, _, subset = spec.partition(":")
    level = d.text_level
    if level not in ("word", "char"):
        raise ConfigError(f"config key 'data.text_level' = {level!r}: expected 'word' or 'char'")
    import datasets

    try:
        ds = datasets.load_dataset(repo, subset or None)
    except Exception as e:  # datasets raises many kinds (offline, not found, no script support); report one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        offline = " (HF_DATASETS_OFFLINE is set)" if os.environ.get("HF_DATASETS_OFFLINE") else ""
        raise DataError(f"corpus {name!r}: Hugging Face datasets cannot load it{offline}: "
                        f"{type(e).__name__}: {first}") from None
    aliases = {"train": "train", "valid": "validation" if "validation" in ds else "valid", "test": "test"}
    field = d.hub_text_field
    if field not in ds["train"].column_names:
        raise ConfigError(f"config key 'data.hub_text_field' = {field!r}: corpus {name!r} has columns "
                          f"{ds['train'].column_names}")
    have = [s for s in SPLITS if aliases[s] in ds]
    key = {"corpus": name, "fingerprints": {s: ds[aliases[s]]._fingerprint for s in have}, "level": level,
           "char_oov": d.char_oov, "field": field,
           "fractions": list(d.split_fractions) if len(have) < 3 else None}
    tokenize = word_tokens if level == "word" else list

    def build():
        texts = {s: join_lines(ds[aliases[s]][field]) for s in have}
        if len(have) < 3:
            tokens = split_fractions(tokenize(texts["train"]), d.split_fractions)
        else:
            tokens = {s: tokenize(t) for s, t in texts.items()}
        return make_splits(tokens, level, config, {s: f"{name} {s}" for s in SPLITS})

    vocab, splits = cached_splits(f"hub-{repo}", key, build)
    files = {s: (f"{name} {aliases[s] if len(have) == 3 else 'train'}",) for s in SPLITS}
    return Corpus(name, level, vocab, splits, files=files)
