"""The user's own corpora: `text:PATH` (a file or directory) and `hub:NAME[:CONFIG][@REVISION]` (Hugging Face).

Not in the registry: nothing to fetch and no checksums to hold them to. The token cache
is keyed by the files' SHA-256 (for text:) or the datasets' fingerprints and the revision
(for hub:). Each `Corpus` carries its provenance for the run's record: the SHA-256 of every
file read and, for hub:, the revision asked for and the commit loaded.
"""

from __future__ import annotations

import os
import re
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
    hashes = {str(p): sha for s, ps in files.items() for p, sha in zip(ps, sums[s])}
    return Corpus(name, level, vocab, splits, files={s: tuple(map(str, ps)) for s, ps in per_split.items()},
                  provenance={"files": hashes})


HUB_SPEC = "hub:NAME[:CONFIG][@REVISION]"
_COMMIT = re.compile(r"[0-9a-f]{40}")


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`NAME[:CONFIG][@REVISION]` -> (name, config, revision); the first '@' starts the revision.

    A revision may hold '/' (`refs/convert/parquet`); an empty part is a one-line ConfigError.
    """
    base, at, revision = spec.partition("@")
    repo, colon, subset = base.partition(":")
    empty = [part for part, missing in [("NAME", not repo), ("CONFIG after ':'", colon and not subset),
                                        ("REVISION after '@'", at and not revision)] if missing]
    if empty:
        raise ConfigError(f"config key 'data.corpus' = 'hub:{spec}': empty {empty[0]}; expected {HUB_SPEC}")
    return repo, subset or None, revision or None


def load_hub(spec: str, config: ConfigDict) -> Corpus:
    """`hub:NAME[:CONFIG][@REVISION]`: the `data.hub_text_field` column of a hub dataset, at REVISION if given.

    Its train/validation/test splits if it has them, else train cut by `data.split_fractions`.
    NAME may be a local directory of data files (which has no revisions).
    """
    name, d = f"hub:{spec}", config.data
    repo, subset, revision = parse_hub_spec(spec)
    level = d.text_level
    if level not in ("word", "char"):
        raise ConfigError(f"config key 'data.text_level' = {level!r}: expected 'word' or 'char'")
    local = os.path.isdir(repo)
    if local and revision:
        raise ConfigError(f"config key 'data.corpus' = {name!r}: {repo} is a local directory, which has no "
                          f"revisions; expected a hub repository before '@'")
    import datasets

    try:
        ds = datasets.load_dataset(repo, subset, revision=revision)
    except Exception as e:  # datasets raises many kinds (offline, not found, no script support); report one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        offline = " (HF_DATASETS_OFFLINE is set)" if os.environ.get("HF_DATASETS_OFFLINE") else ""
        raise DataError(f"corpus {name!r}: Hugging Face datasets cannot load it{offline}: "
                        f"{type(e).__name__}: {first}") from None
    if "train" not in ds:
        raise DataError(f"corpus {name!r}: no 'train' split; it has {list(ds)}")
    aliases = {"train": "train", "valid": "validation" if "validation" in ds else "valid", "test": "test"}
    field = d.hub_text_field
    if field not in ds["train"].column_names:
        raise ConfigError(f"config key 'data.hub_text_field' = {field!r}: corpus {name!r} has columns "
                          f"{ds['train'].column_names}")
    have = [s for s in SPLITS if aliases[s] in ds]
    read = {s: tuple(f["filename"] for f in ds[aliases[s]].cache_files) for s in have}
    files = read if len(have) == 3 else dict.fromkeys(SPLITS, read["train"])
    commit = None if local else _loaded_commit(repo, revision, read["train"], name)
    key = {"corpus": name, "revision": revision, "commit": commit,
           "fingerprints": {s: ds[aliases[s]]._fingerprint for s in have}, "level": level,
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
    provenance = {"files": {f: file_sha256(Path(f)) for fs in files.values() for f in fs},
                  "revision": revision, "commit": commit}
    return Corpus(name, level, vocab, splits, files=files, provenance=provenance)


def _loaded_commit(repo: str, revision: str | None, cache_files: tuple[str, ...], name: str) -> str | None:
    """The hub commit datasets loaded (its cache directory is named by it), checked against `revision`.

    Offline, datasets loads the newest cached copy whatever revision is asked for; a revision
    is checked when it is a full commit hash or huggingface_hub's cache recorded where it points.
    """
    commit = Path(cache_files[0]).parent.name if cache_files else None
    if commit is None or not _COMMIT.fullmatch(commit):
        return None
    if revision is None:
        return commit
    wanted = revision if _COMMIT.fullmatch(revision) else _cached_ref(repo, revision)
    if wanted is not None and wanted != commit:
        raise DataError(f"corpus {name!r}: revision {revision} is commit {wanted}, but datasets loaded commit "
                        f"{commit} (offline it reads the newest cached copy; load this revision once online)")
    return commit


def _cached_ref(repo: str, revision: str) -> str | None:
    """The commit a branch or ref of a hub dataset pointed at when huggingface_hub last resolved it, if cached."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}" / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None
