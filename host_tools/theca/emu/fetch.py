"""`theca emu fetch-firmware`: the official MicroPython firmware for the Pico and the RP2040
boot ROM, downloaded from their upstream addresses (pinned here) into the user cache and
checked against the SHA-256 values the repository lists (SHA256SUMS). A file whose hash is
not listed is refused, naming both hashes, and nothing is kept; a user who trusts such a
file passes it to `theca emu --firmware` instead.

The boot ROM is not published as a binary: rp2040js's `demo/bootrom.ts` (at a pinned
commit) holds it as the little-endian words of a Uint32Array, byte-identical to the
pico-bootrom B1 build; the words are taken from that file.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from theca.errors import BadInput


class Source(NamedTuple):
    url: str
    #: "raw" (the file itself) or "uint32-ts" (the words of a TypeScript Uint32Array)
    form: str


#: Where each file comes from. MicroPython v1.28.0 for RPI_PICO, as its download page
#: (https://micropython.org/download/RPI_PICO/) links it; the boot ROM from rp2040js at the
#: commit whose demo/bootrom.ts this repository checked (f9becba, "reformat with prettier").
UPSTREAM: dict[str, Source] = {
    "micropython-v1.28.0-RPI_PICO.uf2": Source(
        "https://micropython.org/resources/firmware/RPI_PICO-20260406-v1.28.0.uf2", "raw"),
    "rp2040-bootrom-b1.bin": Source(
        "https://raw.githubusercontent.com/wokwi/rp2040js/"
        "f9becba867f6d7afbf99551270cc9a2e841742eb/demo/bootrom.ts", "uint32-ts"),
}
#: A mirror (an internal server, a test's): each file is fetched as MIRROR/<the upstream
#: address's last part> instead.
MIRROR_ENV = "THECA_RP2_MIRROR"
_TIMEOUT_S = 60


class FetchError(Exception):
    """A download that did not happen (the network, the server): the message says why."""


def address(src: Source) -> str:
    """Where a file is fetched from: upstream, or the mirror's copy of it."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + src.url.rsplit("/", 1)[1]
    return src.url


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r:  # noqa: S310 (https, pinned)
            return r.read()
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise FetchError(f"{url}: {why} (no network? set {MIRROR_ENV} to a mirror, or put the "
                         "files in the cache by hand)") from None


def words_of_ts(text: str) -> bytes:
    """The bytes of a TypeScript `new Uint32Array([0x..., ...])`, little-endian."""
    body = text.split("Uint32Array([", 1)
    if len(body) != 2:
        raise BadInput("the boot ROM source holds no Uint32Array")
    words = [int(w, 16) for w in re.findall(r"0x([0-9a-fA-F]{1,8})", body[1].split("])", 1)[0])]
    return struct.pack(f"<{len(words)}I", *words)


def fetch_all(dest: Path, sums: dict[str, str], log=print) -> list[Path]:
    """Every file of UPSTREAM into `dest`, each checked against `sums` before it is kept
    (written under a temporary name, then renamed). Raises BadInput for a file whose hash
    is not the listed one, FetchError for a download that failed."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, src in UPSTREAM.items():
        target = dest / name
        want = sums.get(name)
        if want is None:
            raise BadInput(f"{name} has no line in SHA256SUMS: it cannot be checked")
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == want:
            log(f"{name}: already in {dest} (sha256 {want[:16]}...)")
            out.append(target)
            continue
        url = address(src)
        log(f"{name}: downloading {url}")
        data = _download(url)
        if src.form == "uint32-ts":
            data = words_of_ts(data.decode("utf-8", "replace"))
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise BadInput(f"{name} from {url} is not the listed file: sha256 {got}, SHA256SUMS "
                           f"lists {want}; nothing was kept. If you trust it, pass it to "
                           "`theca emu --firmware FILE`")
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
        log(f"{name}: {len(data):,} bytes, sha256 {got[:16]}... as listed -> {target}")
        out.append(target)
    return out
