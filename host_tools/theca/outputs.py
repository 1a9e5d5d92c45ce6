"""Where the host tools write: one rule for every command's output file or folder.

- The parent folder is made if it is missing (as `simulate` always did).
- A command never writes onto one of its own inputs (the same file, by any path or link):
  `theca decode LOG -o LOG` would truncate the log it is reading.
- It never writes through a symbolic link: a file is written beside its name and renamed
  over it, which replaces a link itself, never the file the link points at, and a named
  output that is a link is refused.
- A file appears whole or not at all: written to a temporary file in the same folder,
  then renamed (atomic on one filesystem); a failure leaves what was there and no
  temporary behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from theca.errors import BadInput


def output_file(path: str | os.PathLike, inputs: tuple = (), what: str = "-o") -> Path:
    """Check `path` as an output file of a command reading `inputs`; make its folder.
    BadInput (exit 2) naming the problem, before anything is read or written."""
    p = Path(path)
    if p.is_symlink():
        raise BadInput(f"{what}: {p} is a symbolic link: theca writes no file through a "
                       "link (name the file itself, or remove the link)")
    if p.is_dir():
        raise BadInput(f"{what}: {p} is a folder, not a file")
    for i in inputs:
        if _same(p, i):
            raise BadInput(f"{what}: {p} is the input {i}: writing it would destroy what is "
                           "being read (name another file)")
    make_folder(p.parent, what)
    return p


def output_folder(path: str | os.PathLike, what: str = "-o", make: bool = True) -> Path:
    """Check `path` as an output folder; make it (and its parents) if missing (`make`:
    a command checks first and makes it once its input has been read)."""
    p = Path(path)
    if p.is_symlink():
        raise BadInput(f"{what}: {p} is a symbolic link: theca writes into no folder through "
                       "a link (name the folder itself)")
    if p.exists() and not p.is_dir():
        raise BadInput(f"{what}: {p} is a file, not a folder")
    if make:
        make_folder(p, what)
    return p


def make_folder(p: Path, what: str = "-o") -> None:
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"{what}: cannot make the folder {p}: {e.strerror or e}") from None


def _same(a: Path, b) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed over `path` when the block ends
    without an error, removed when it raises."""
    # (the suffix stays last: a writer that picks its format by it, as matplotlib does)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    t = Path(tmp)
    try:
        yield t
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(t, 0o666 & ~mask)  # as an ordinary new file (mkstemp makes it 0600)
        os.replace(t, path)
    except BaseException:
        t.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: Path, mode: str = "w", newline: str | None = None):
    """An open file whose content replaces `path` whole when the block ends."""
    enc = None if "b" in mode else "utf-8"
    with atomic_path(path) as t, open(t, mode, newline=newline, encoding=enc) as f:
        yield f
