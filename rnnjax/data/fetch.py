"""The data directory and verified downloads into it: what `rnnjax data fetch CORPUS` does.

A `Remote` is one file: its path inside the data directory, its canonical public address
and the SHA-256 of the file as the loaders read it (`rnnjax.data.corpora.REGISTRY` lists
each corpus's). A download goes to a hidden temporary name in the target directory, is
hashed as it arrives, and is renamed into place only when its length and checksum are
right, so an interrupted or corrupt transfer never leaves a file that looks valid. Files
already present with the right checksum are not fetched again.

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
from typing import Callable, Iterable, NamedTuple

from rnnjax.errors import DataError
from rnnjax.files import user_mode

DATA_DIR_ENV = "RNNJAX_DATA_DIR"
MIRROR_ENV = "RNNJAX_DATA_MIRROR"
CHUNK = 1 << 16


def resolve_data_dir(flag: str | None = None) -> Path:
    """--data-dir, else $RNNJAX_DATA_DIR, else ~/.cache/rnnjax/data."""
    if flag:
        return Path(flag).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return Path("~/.cache/rnnjax/data").expanduser()


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Remote(NamedTuple):
    """One file of a corpus: where it lives in the data directory and where it comes from."""

    path: str  # relative path inside the data directory, and on a mirror
    url: str  # canonical public address
    sha256: str  # of the file as stored at `path`
    member: str = ""  # name inside the zip archive at `url`; "" when `url` is the file itself


def fetch_command(corpus: str, data_dir: Path | None = None) -> str:
    """The command that fetches `corpus`, for messages about a missing file."""
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


def fetch(remotes: Iterable[Remote], data_dir: Path, mirror: str | None = None,
          log: Callable[[str], None] = print) -> list[Path]:
    """Make every file of `remotes` present and verified under `data_dir`; return their paths."""
    out = []
    for remote in remotes:
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
