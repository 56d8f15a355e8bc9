"""Fetching from a mirror served on 127.0.0.1: verified files, and nothing half-written on any failure."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from rnnjax import cli, config as config_lib, data
from rnnjax.data import corpora, fetch
from rnnjax.errors import DataError


class Mirror(http.server.ThreadingHTTPServer):
    """Serves `root`; `truncate` names paths whose body stops halfway (Content-Length says all)."""

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.truncate: set[str] = set()
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        rel = self.path.lstrip("/")
        self.server.requests.append(rel)
        path = self.server.root / rel
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if rel in self.server.truncate else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, shared_data):
    root = tmp_path / "mirror"
    for corpus in ("timemachine", "rt-polarity"):
        shutil.copytree(shared_data / corpus, root / corpus)
    server = Mirror(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def test_fetch_from_mirror_verifies_and_does_not_fetch_twice(mirror, tmp_path, shared_data, capsys):
    dest = tmp_path / "data"
    paths = corpora.fetch_corpus("rt-polarity", dest, mirror.url)
    assert [p.relative_to(dest).as_posix() for p in paths] == ["rt-polarity/rt-polarity.pos",
                                                                "rt-polarity/rt-polarity.neg"]
    for p in paths:
        assert p.read_bytes() == (shared_data / p.relative_to(dest)).read_bytes()
    assert sorted(_leftovers(dest)) == sorted(paths)  # no temporary files left
    assert "rt-polarity.pos" in capsys.readouterr().err  # progress
    mirror.requests.clear()
    corpora.fetch_corpus("rt-polarity", dest, mirror.url)
    assert mirror.requests == []


def test_corrupt_local_file_is_replaced(mirror, tmp_path, shared_data):
    dest = tmp_path / "data" / "timemachine" / "timemachine.txt"
    dest.parent.mkdir(parents=True)
    dest.write_text("truncated")
    corpora.fetch_corpus("timemachine", tmp_path / "data", mirror.url)
    assert dest.read_bytes() == (shared_data / "timemachine" / "timemachine.txt").read_bytes()


def test_checksum_mismatch_leaves_nothing(mirror, tmp_path):
    served = mirror.root / "timemachine" / "timemachine.txt"
    served.write_bytes(served.read_bytes().replace(b"Time", b"Tide"))
    actual = hashlib.sha256(served.read_bytes()).hexdigest()
    with pytest.raises(DataError) as e:
        corpora.fetch_corpus("timemachine", tmp_path / "data", mirror.url)
    msg = str(e.value)
    assert "checksum mismatch" in msg and corpora.remotes("timemachine")[0].sha256 in msg and actual in msg
    assert "\n" not in msg
    assert _leftovers(tmp_path / "data") == []


def test_404_leaves_nothing(mirror, tmp_path):
    (mirror.root / "timemachine" / "timemachine.txt").unlink()
    with pytest.raises(DataError, match="HTTP 404") as e:
        corpora.fetch_corpus("timemachine", tmp_path / "data", mirror.url)
    assert "timemachine/timemachine.txt" in str(e.value)
    assert _leftovers(tmp_path / "data") == []


def test_interrupted_transfer_leaves_nothing(mirror, tmp_path):
    mirror.truncate.add("timemachine/timemachine.txt")
    with pytest.raises(DataError, match="transfer stopped after") as e:
        corpora.fetch_corpus("timemachine", tmp_path / "data", mirror.url)
    assert "\n" not in str(e.value)
    assert _leftovers(tmp_path / "data") == []


def test_canonical_zip_member_is_extracted_and_verified(mirror, tmp_path, shared_data):
    text = (shared_data / "timemachine" / "timemachine.txt").read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("inner.txt", text)
    (mirror.root / "pack.zip").write_bytes(buf.getvalue())
    dest = tmp_path / "out" / "t.txt"
    fetch.download(f"{mirror.url}/pack.zip", dest, hashlib.sha256(text).hexdigest(), member="inner.txt")
    assert dest.read_bytes() == text and _leftovers(dest.parent) == [dest]
    with pytest.raises(DataError, match="not a zip archive holding 'missing.txt'"):
        fetch.download(f"{mirror.url}/pack.zip", tmp_path / "out2" / "t.txt", "0" * 64, member="missing.txt")
    assert _leftovers(tmp_path / "out2") == []


def test_file_url_mirror_and_env(monkeypatch, tmp_path, shared_data):
    monkeypatch.setenv(fetch.MIRROR_ENV, shared_data.as_uri())
    assert fetch.resolve_mirror(None) == shared_data.as_uri()
    assert fetch.resolve_mirror("http://x") == "http://x"
    corpora.fetch_corpus("timemachine", tmp_path / "data", fetch.resolve_mirror(None))
    assert (tmp_path / "data" / "timemachine" / "timemachine.txt").is_file()


def test_cli_fetch(mirror, tmp_path, capsys):
    assert cli.main(["data", "fetch", "timemachine", "--data-dir", str(tmp_path / "d"), "--mirror", mirror.url]) == 0
    assert (tmp_path / "d" / "timemachine" / "timemachine.txt").is_file()
    (mirror.root / "rt-polarity" / "rt-polarity.neg").unlink()
    capsys.readouterr()
    assert cli.main(["data", "fetch", "rt-polarity", "--data-dir", str(tmp_path / "d"), "--mirror", mirror.url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rnnjax: error: ") and "HTTP 404" in err[-1]
    assert cli.main(["data", "fetch", "synthetic", "--data-dir", str(tmp_path / "d")]) == 2


def test_training_never_downloads(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_network)
    config = config_lib.resolve("ptb:small", {})
    with pytest.raises(DataError) as e:
        data.load_corpus(config, tmp_path / "empty")
    assert f"rnnjax data fetch ptb --data-dir {tmp_path / 'empty'}" in str(e.value)
