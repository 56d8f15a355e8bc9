"""What `rnnjax data stats CORPUS` prints: a corpus's sizes, vocabulary, files and checksums.

One JSON object, so that a run's numbers can be traced to the exact files it read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnjax.config import ConfigDict
from rnnjax.data.corpora import SENTENCE_CORPORA, load_corpus, load_sentences
from rnnjax.data.fetch import file_sha256
from rnnjax.data.text import UNK


def corpus_stats(config: ConfigDict, data_dir: Path) -> dict:
    """What `rnnjax data stats` prints: per split tokens, types and files; vocabulary; checksums."""
    name = config.data.corpus
    if name in SENTENCE_CORPORA:
        s = load_sentences(config, data_dir)
        tokens = [t for words in s.sentences for t in words]
        return {"corpus": name, "level": "sentence", "encoding": config.data.encoding,
                "sentences": {label: int((s.labels == i).sum()) for i, label in enumerate(s.label_names)},
                "tokens": len(tokens), "vocab_size": len(set(tokens)),
                "files": {f: file_sha256(Path(f)) for f in s.files}}
    c = load_corpus(config, data_dir, check_size=False)
    out = {"corpus": c.name, "level": c.level, "vocab_size": c.vocab_size, "splits": {}}
    unk = c.vocab.index(UNK) if UNK in c.vocab else None
    for split, ids in c.splits.items():
        row = {"tokens": len(ids), "types": len(np.unique(ids))}
        if unk is not None:
            row["unk_tokens"] = int((ids == unk).sum())
        if c.files:
            row["files"] = list(c.files[split])
        out["splits"][split] = row
    if c.floor_ppl is not None:
        out["floor_ppl"] = c.floor_ppl
    if c.provenance:
        out.update(c.provenance)  # "files": {file: SHA-256}; hub: also "revision" and "commit"
    if c.files and len(set(c.files.values())) == 1:
        out["split"] = f"contiguous fractions {tuple(config.data.split_fractions)} of the token sequence"
    return out
