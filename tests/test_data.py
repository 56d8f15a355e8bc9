"""Corpora: statistics of every shipped corpus, text:/hub: sources, the token cache, and one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnjax import cli, data
from rnnjax.data import corpora, fetch, sources
from rnnjax.config import apply_overrides, defaults
from rnnjax.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokens")


@pytest.fixture(autouse=True)
def _token_cache(monkeypatch, token_cache):
    monkeypatch.setenv(data.TOKEN_CACHE_ENV, str(token_cache))


def cfg(corpus: str, **data_keys) -> object:
    return apply_overrides(defaults(), {"data.corpus": corpus, **{f"data.{k}": str(v) for k, v in data_keys.items()}})


def load(corpus: str, data_dir: Path, **data_keys) -> data.Corpus:
    return data.load_corpus(cfg(corpus, **data_keys), data_dir, check_size=False)


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_ptb(shared_data):
    c = load("ptb", shared_data)
    assert (len(c.splits["train"]), len(c.splits["valid"]), len(c.splits["test"])) == (929_589, 73_760, 82_430)
    assert c.vocab_size == 10_000 and c.level == "word"
    assert c.vocab[:3] == ["the", "<unk>", "<eos>"]  # Zaremba's reader order: count, then token
    assert all(a.dtype == np.int32 for a in c.splits.values())
    first = (shared_data / "ptb" / "ptb.train.txt").read_text().split("\n")[0].split()
    assert [c.vocab[i] for i in c.splits["train"][: len(first) + 1]] == first + ["<eos>"]


def test_ptb_char_derivation(shared_data):
    c = load("ptb_char", shared_data)
    for split in ("train", "valid", "test"):
        lines = (shared_data / "ptb" / f"ptb.{split}.txt").read_text().split("\n")[:-1]
        assert len(c.splits[split]) == sum(len("_".join(line.split())) + 1 for line in lines)
    first = (shared_data / "ptb" / "ptb.train.txt").read_text().split("\n")[0]
    decoded = [c.vocab[i] for i in c.splits["train"][: len("_".join(first.split())) + 1]]
    assert "".join(decoded[:-1]) == "_".join(first.split()) and decoded[-1] == "<eos>"
    assert "_" in c.vocab and " " not in c.vocab and c.vocab[-1] == "<unk>"
    assert c.vocab_size == 51  # 50 symbols in train (letters, digits, punctuation, '_', <eos>) + <unk>


@pytest.mark.parametrize("corpus,chars,train_types", [
    ("tinyshakespeare", 1_115_394, 65),
    ("anna", 1_985_223, 77),  # 2,025,486 bytes less the 40,263 CRs of its CRLF line ends
    ("jaychou", 64_925, 2_524),
    ("timemachine", 178_979, 70),
])
def test_char_corpora(shared_data, corpus, chars, train_types):
    option = {"timemachine_text": "raw"} if corpus == "timemachine" else {}
    c = load(corpus, shared_data, **option)
    n = {s: len(a) for s, a in c.splits.items()}
    assert sum(n.values()) == chars
    assert (n["train"], n["valid"]) == (int(chars * 0.9), int(chars * 0.05))  # contiguous 90/5/5
    assert len(np.unique(c.splits["train"])) == train_types
    assert c.vocab_size == train_types + 1 and c.vocab[-1] == "<unk>"
    assert "\r" not in c.vocab
    if corpus == "jaychou":
        assert all(len(t) == 1 for t in c.vocab[:-1]) and "想" in c.vocab  # characters, not bytes
    text = (shared_data / corpora.remotes(corpus)[0].path).read_bytes().decode().replace("\r\n", "\n")
    assert "".join(c.vocab[i] for i in c.splits["train"][:200]) == text[:200]


def test_tinyshakespeare_has_65_characters(shared_data):
    c = load("tinyshakespeare", shared_data, char_oov="error")
    assert c.vocab_size == 65 and "<unk>" not in c.vocab


def test_timemachine_d2l_letters(shared_data):
    c = load("timemachine", shared_data)
    assert sorted(c.vocab) == sorted([" ", *"abcdefghijklmnopqrstuvwxyz", "<unk>"])  # d2l's 28 tokens
    assert "".join(c.vocab[i] for i in c.splits["train"][:16]) == "the time machine"


def test_split_fractions_and_char_oov(shared_data):
    c = load("jaychou", shared_data, split_fractions="(0.8, 0.1, 0.1)")
    assert len(c.splits["train"]) == int(64_925 * 0.8)
    with pytest.raises(DataError) as e:
        load("jaychou", shared_data, char_oov="error")
    msg = one_line_error(e)
    assert "jaychou_lyrics.txt" in msg and "not in the training vocabulary" in msg and "data.char_oov" in msg
    with pytest.raises(ConfigError, match="data.split_fractions"):
        load("jaychou", shared_data, split_fractions="(0.9, 0.2, 0.1)")
    with pytest.raises(ConfigError, match="data.char_oov"):
        load("jaychou", shared_data, char_oov="ignore")


def test_rt_polarity_encoding(shared_data):
    path = shared_data / "rt-polarity" / "rt-polarity.neg"
    raw = path.read_bytes()
    bad = next(i for i in range(len(raw)) if _invalid_utf8_at(raw, i))
    with pytest.raises(DataError) as e:
        data.load_sentences(cfg("rt-polarity"), shared_data)
    msg = one_line_error(e)
    assert str(path) in msg and f"byte offset {bad}" in msg and "data.encoding" in msg
    s = data.load_sentences(cfg("rt-polarity", encoding="latin-1"), shared_data)
    assert len(s.sentences) == 10_662 and s.label_names == ["neg", "pos"]
    assert (s.labels == 1).sum() == (s.labels == 0).sum() == 5_331
    assert s.sentences[-1] == (shared_data / "rt-polarity" / "rt-polarity.pos").read_bytes().decode(
        "latin-1").strip().split("\n")[-1].split()
    with pytest.raises(DataError, match="sentence-level"):
        load("rt-polarity", shared_data, encoding="latin-1")


def _invalid_utf8_at(raw: bytes, i: int) -> bool:
    try:
        raw[: i + 4].decode("utf-8")
        return False
    except UnicodeDecodeError as e:
        return e.start == i


def test_missing_files_name_the_fetch_command(tmp_path, capsys):
    with pytest.raises(DataError) as e:
        load("tinyshakespeare", tmp_path)
    msg = one_line_error(e)
    assert "input.txt" in msg and f"rnnjax data fetch tinyshakespeare --data-dir {tmp_path}" in msg
    code = cli.main(["train", "--config", "ptb:small", "--workdir", str(tmp_path / "run"), "--data-dir",
                     str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "rnnjax data fetch ptb" in err[0]


def test_checksum_mismatch_at_load(tmp_path, shared_data):
    target = tmp_path / "timemachine" / "timemachine.txt"
    target.parent.mkdir()
    target.write_bytes((shared_data / "timemachine" / "timemachine.txt").read_bytes()[:-10])
    with pytest.raises(DataError) as e:
        load("timemachine", tmp_path)
    msg = one_line_error(e)
    assert str(target) in msg and "checksum mismatch" in msg and fetch.file_sha256(target) in msg


def test_text_file_char_and_word(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("the cat sat\r\non the mat\n" * 50)
    c = load(f"text:{f}", tmp_path)
    assert c.level == "char" and sum(len(a) for a in c.splits.values()) == len("the cat sat\non the mat\n") * 50
    w = load(f"text:{f}", tmp_path, text_level="word")
    assert sum(len(a) for a in w.splits.values()) == 8 * 50
    assert set(w.vocab) == {"the", "cat", "sat", "on", "mat", "<eos>", "<unk>"}


def test_text_dir_given_splits_and_concatenation(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "train.txt").write_text("a b c\n" * 20)
    (d / "valid.txt").write_text("a b zebra\n")
    (d / "test.txt").write_text("c b a\n")
    c = load(f"text:{d}", tmp_path, text_level="word")
    assert [c.vocab[i] for i in c.splits["valid"]] == ["a", "b", "<unk>", "<eos>"]
    assert c.files["valid"] == (str(d / "valid.txt"),)
    assert c.provenance == {"files": {str(d / f"{s}.txt"): sha256(d / f"{s}.txt") for s in ("train", "valid", "test")}}
    (d / "test.txt").unlink()
    with pytest.raises(DataError, match="test.txt not found"):
        load(f"text:{d}", tmp_path)
    many = tmp_path / "many"
    many.mkdir()
    (many / "b.txt").write_text("world hello")  # no final newline: lines must not merge across files
    (many / "a.txt").write_text("hello world")
    c = load(f"text:{many}", tmp_path, text_level="word", split_fractions="(0.5, 0.25, 0.25)")
    decoded = [c.vocab[i] for i in np.concatenate(list(c.splits.values()))]
    assert decoded == ["hello", "world", "<eos>", "world", "hello", "<eos>"]


def test_bad_text_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load(f"text:{empty}", tmp_path)
    with pytest.raises(DataError, match="neither a file nor a directory"):
        load(f"text:{tmp_path / 'nope'}", tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xc3\xa9 ok\nna\xefve\n")
    with pytest.raises(DataError) as e:
        load(f"text:{bad}", tmp_path)
    assert f"{bad}: not valid utf-8 at byte offset 11" in one_line_error(e)
    assert load(f"text:{bad}", tmp_path, encoding="latin-1").vocab_size > 5
    with pytest.raises(ConfigError, match="data.encoding"):
        load(f"text:{bad}", tmp_path, encoding="klingon")
    small = tmp_path / "small.txt"
    small.write_text("abc\n" * 30)
    with pytest.raises(DataError) as e:
        data.load_corpus(cfg(f"text:{small}"), tmp_path)
    assert "train split has 108 tokens, fewer than one batch needs" in one_line_error(e)
    with pytest.raises(DataError, match="data.corpus"):
        load("wikipedia", tmp_path)


def test_token_cache_is_used_and_keyed_by_content(tmp_path, monkeypatch):
    f = tmp_path / "t.txt"
    f.write_text("abcabc\n" * 100)
    first = load(f"text:{f}", tmp_path)

    def no_reading(*args, **kwargs):
        raise AssertionError("read the text again despite the cache")

    monkeypatch.setattr(sources, "read_texts", no_reading)
    again = load(f"text:{f}", tmp_path)
    assert again.vocab == first.vocab
    assert all(np.array_equal(again.splits[s], first.splits[s]) for s in data.SPLITS)
    monkeypatch.undo()
    monkeypatch.setenv(data.TOKEN_CACHE_ENV, str(tmp_path / "fresh_cache"))
    f.write_text("xyzxyz\n" * 100)  # same path, new content: a new cache entry, never the stale one
    assert set(load(f"text:{f}", tmp_path).vocab) == {"x", "y", "z", "\n", "<unk>"}


def test_hub_source_offline(tmp_path):
    d = tmp_path / "local_hub"
    d.mkdir()
    for split, text in [("train", "one two three\n" * 30), ("validation", "one two\n"), ("test", "three\n")]:
        (d / f"{split}.txt").write_text(text)
    c = load(f"hub:{d}", tmp_path, text_level="word")
    assert len(c.splits["train"]) == 120 and len(c.splits["valid"]) == 3 and len(c.splits["test"]) == 2
    with pytest.raises(DataError) as e:
        load("hub:nobody/no-such-dataset-rnnjax", tmp_path)
    assert "Hugging Face datasets cannot load it" in one_line_error(e)


REPO = "ptb-text-only/ptb_text_only"
COMMIT_A, COMMIT_B = hashlib.sha1(b"a").hexdigest(), hashlib.sha1(b"b").hexdigest()


def write_parquet_export(root: Path, splits: dict[str, list[str]]) -> None:
    """A hub parquet export's layout (CONFIG/SPLIT/0000.parquet): the text in 'sentence', beside an id column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, rows in splits.items():
        path = root / "penn_treebank" / split / "0000.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.table({"id": list(range(len(rows))), "sentence": rows}), path)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path) -> Path:
    """Hugging Face offline, its caches under tmp_path; set on the modules too, which read the environment once."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))
    monkeypatch.setenv(data.TOKEN_CACHE_ENV, str(tmp_path / "tokens"))
    return tmp_path / "hf_hub"


def cache_commit(tmp_path: Path, commit: str, rows: list[str], mtime: int) -> None:
    """What loading REPO at `commit` online leaves in datasets' cache (Arrow files under the commit's name)."""
    import datasets

    src = tmp_path / "src" / commit / REPO.split("/")[1]
    write_parquet_export(src, {"train": rows * 10, "validation": rows, "test": rows})
    prepared = Path(datasets.load_dataset(str(src), cache_dir=str(tmp_path / "prep"))["train"].cache_files[0]
                    ["filename"]).parent
    target = Path(datasets.config.HF_DATASETS_CACHE) / REPO.replace("/", "___") / "default" / "0.0.0" / commit
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(prepared, target)
    os.utime(target, (mtime, mtime))  # offline, datasets reads the newest


def hub_entries() -> list[str]:
    return sorted(p.name for p in data.resolve_token_cache().glob("hub-*"))


def test_hub_spec_parsing(tmp_path):
    assert sources.parse_hub_spec(f"{REPO}@refs/convert/parquet") == (REPO, None, "refs/convert/parquet")
    assert sources.parse_hub_spec("a/b:cfg@v1.0") == ("a/b", "cfg", "v1.0")
    assert sources.parse_hub_spec("a/b:cfg") == ("a/b", "cfg", None)
    assert sources.parse_hub_spec("a/b@x@y") == ("a/b", None, "x@y")  # only the first '@' separates
    for spec, part in [("", "NAME"), ("@main", "NAME"), (":cfg", "NAME"), ("a/b@", "REVISION after '@'"),
                       ("a/b:", "CONFIG after ':'"), ("a/b:@main", "CONFIG after ':'")]:
        with pytest.raises(ConfigError) as e:
            load(f"hub:{spec}", tmp_path)
        assert one_line_error(e) == (f"config key 'data.corpus' = 'hub:{spec}': empty {part}; "
                                     f"expected hub:NAME[:CONFIG][@REVISION]")


def test_hub_parquet_export_layout(tmp_path, offline_hub):
    d = tmp_path / "ptb_text_only"
    write_parquet_export(d, {"train": ["one two three"] * 30, "validation": ["one two"], "test": ["three"]})
    c = load(f"hub:{d}", tmp_path, text_level="word", hub_text_field="sentence")
    assert [len(c.splits[s]) for s in data.SPLITS] == [120, 3, 2]
    assert [c.vocab[i] for i in c.splits["valid"]] == ["one", "two", "<eos>"]  # the text column, not the ids
    files = [f for s in data.SPLITS for f in c.files[s]]
    assert len(set(files)) == 3 and all(f.endswith(".arrow") for f in files)
    assert c.provenance == {"files": {f: sha256(f) for f in files}, "revision": None, "commit": None}
    with pytest.raises(ConfigError) as e:
        load(f"hub:{d}", tmp_path)
    assert "config key 'data.hub_text_field' = 'text'" in one_line_error(e) and "'sentence'" in one_line_error(e)
    with pytest.raises(ConfigError) as e:
        load(f"hub:{d}@main", tmp_path, hub_text_field="sentence")
    assert "is a local directory, which has no revisions" in one_line_error(e)


def test_hub_revision_offline(tmp_path, offline_hub, monkeypatch):
    import datasets

    asked, real = [], datasets.load_dataset

    def spy(path, *args, **kwargs):  # the revisions rnnjax asks datasets for, REPO's
        if path == REPO:
            asked.append(kwargs["revision"])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)

    def hub(spec: str) -> data.Corpus:
        return load(f"hub:{spec}", tmp_path, text_level="word", hub_text_field="sentence")

    cache_commit(tmp_path, COMMIT_A, ["alpha beta"], 1_000_000)
    a = hub(f"{REPO}@{COMMIT_A}")
    assert "alpha" in a.vocab and asked == [COMMIT_A]
    assert a.provenance["revision"] == a.provenance["commit"] == COMMIT_A
    files = sorted({f for fs in a.files.values() for f in fs})
    assert len(files) == 3 and all(f"/{COMMIT_A}/" in f for f in files)
    assert a.provenance["files"] == {f: sha256(f) for f in files}
    assert len(hub_entries()) == 1

    cache_commit(tmp_path, COMMIT_B, ["gamma delta"], 2_000_000)
    b = hub(f"{REPO}@{COMMIT_B}")
    assert "gamma" in b.vocab and b.provenance["commit"] == COMMIT_B and len(hub_entries()) == 2
    with pytest.raises(DataError) as e:  # offline, datasets would hand back B, the newest cached copy
        hub(f"{REPO}@{COMMIT_A}")
    assert f"revision {COMMIT_A} is commit {COMMIT_A}, but datasets loaded commit {COMMIT_B}" in one_line_error(e)

    ref = offline_hub / f"datasets--{REPO.replace('/', '--')}" / "refs" / "refs/convert/parquet"
    ref.parent.mkdir(parents=True)
    ref.write_text(COMMIT_A)  # where huggingface_hub's cache last saw the ref point
    with pytest.raises(DataError, match=f"revision refs/convert/parquet is commit {COMMIT_A}"):
        hub(f"{REPO}@refs/convert/parquet")
    ref.write_text(COMMIT_B)
    parquet = hub(f"{REPO}@refs/convert/parquet")
    assert parquet.provenance["revision"] == "refs/convert/parquet" and parquet.provenance["commit"] == COMMIT_B
    assert parquet.splits["train"].tolist() == b.splits["train"].tolist()
    assert len(hub_entries()) == 3  # same commit, another revision: its own entry
    assert asked[-1] == "refs/convert/parquet"

    stats = data.corpus_stats(cfg(f"hub:{REPO}@{COMMIT_B}", text_level="word", hub_text_field="sentence"), tmp_path)
    assert stats["revision"] == stats["commit"] == COMMIT_B and stats["files"] == b.provenance["files"]


def test_vocab_check_names_the_first_differing_id(tmp_path):
    path = tmp_path / "vocab.json"
    data.check_vocab(["a", "b", "c"], ["a", "b", "c"], path)
    with pytest.raises(DataError) as e:
        data.check_vocab(["a", "b", "c"], ["a", "c", "b"], path)
    assert "id 1 is 'b' there, 'c' here" in one_line_error(e)
    with pytest.raises(DataError, match="3 tokens.*4 tokens"):
        data.check_vocab(["a", "b", "c"], ["a", "b", "c", "d"], path)


def test_cli_data_stats(shared_data, capsys):
    assert cli.main(["data", "stats", "timemachine", "--config.data.timemachine_text=raw"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["corpus"] == "timemachine" and stats["vocab_size"] == 71
    assert sum(s["tokens"] for s in stats["splits"].values()) == 178_979
    path = str(shared_data / "timemachine" / "timemachine.txt")
    assert stats["files"] == {path: fetch.file_sha256(Path(path))} and "0.9" in stats["split"]
    assert cli.main(["data", "stats", "rt-polarity", "--config.data.encoding=latin-1"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sentences"] == {"neg": 5_331, "pos": 5_331}
