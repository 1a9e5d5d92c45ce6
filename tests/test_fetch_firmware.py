"""`theca emu fetch-firmware` (issue 25): the Pico's firmware and boot ROM from their
pinned upstream addresses (here a local mirror, THECA_RP2_MIRROR) into the user cache,
each checked against the SHA-256 the repository lists; an unlisted file is refused, naming
both hashes, and nothing is kept."""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from theca.emu import BOOTROM_NAME, FIRMWARE_NAME, firmware_missing, listed_sums, rp2_dir
from theca.emu.fetch import UPSTREAM, words_of_ts

ROOT = Path(__file__).resolve().parents[1]
UF2_URL_NAME = UPSTREAM[FIRMWARE_NAME].url.rsplit("/", 1)[1]
TS_NAME = UPSTREAM[BOOTROM_NAME].url.rsplit("/", 1)[1]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a):  # noqa: D102 (the test's output stays readable)
        pass


@pytest.fixture
def mirror(tmp_path):
    """A web server on localhost serving tmp_path/www: (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _ts(rom: bytes) -> str:
    # the boot ROM as rp2040js's demo/bootrom.ts holds it
    words = struct.unpack(f"<{len(rom) // 4}I", rom)
    body = ",\n".join(", ".join(f"0x{w:08x}" for w in words[i:i + 8]) for i in range(0, len(words), 8))
    return ("// RP2040 bootrom binary, built from https://github.com/raspberrypi/pico-bootrom\n"
            f"export const bootromB1 = new Uint32Array([\n{body}\n]);\n")


def _fetch(tmp_path, base):
    env = dict(os.environ, THECA_RP2_MIRROR=base, XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "theca.cli", "emu", "fetch-firmware"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_the_boot_rom_s_words_are_taken_from_its_typescript_source():
    rom = bytes(range(256)) * 4
    assert words_of_ts(_ts(rom)) == rom


def test_a_file_that_is_not_the_listed_one_is_refused_naming_both_hashes(tmp_path, mirror):
    www, base = mirror
    (www / UF2_URL_NAME).write_bytes(b"UF2\n" + os.urandom(4096))
    (www / TS_NAME).write_text(_ts(os.urandom(16384)))
    r = _fetch(tmp_path, base)
    assert r.returncode == 2, r.stdout + r.stderr
    got = hashlib.sha256((www / UF2_URL_NAME).read_bytes()).hexdigest()
    assert f"sha256 {got}" in r.stderr and listed_sums()[FIRMWARE_NAME] in r.stderr, r.stderr
    assert "--firmware" in r.stderr
    cache = tmp_path / "cache" / "theca" / "rp2"
    assert not cache.exists() or not any(cache.iterdir())  # nothing kept


def test_no_network_is_said_so(tmp_path):
    r = _fetch(tmp_path, "http://127.0.0.1:9")  # (the discard port: nothing listens)
    assert r.returncode == 1 and "no network?" in r.stderr, r.stderr


def test_the_listed_files_are_fetched_into_the_cache_and_found_there(tmp_path, mirror):
    if firmware_missing() is not None:
        pytest.skip("the listed firmware is not on this machine to serve from a mirror "
                    "(`theca emu fetch-firmware` gets it)")
    www, base = mirror
    real = rp2_dir()
    (www / UF2_URL_NAME).write_bytes((real / FIRMWARE_NAME).read_bytes())
    (www / TS_NAME).write_text(_ts((real / BOOTROM_NAME).read_bytes()))
    r = _fetch(tmp_path, base)
    assert r.returncode == 0, r.stdout + r.stderr
    cache = tmp_path / "cache" / "theca" / "rp2"
    sums = listed_sums()
    for name in (FIRMWARE_NAME, BOOTROM_NAME):
        assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == sums[name]
    again = _fetch(tmp_path, base)
    assert again.returncode == 0 and again.stdout.count("already in") == 2, again.stdout
