"""The emulated Raspberry Pi Pico: the official MicroPython rp2 firmware in rp2040js.

`Emulator` starts `runner.mjs` under node with the firmware and the boot ROM (checked
against their SHA256SUMS), the board's USB serial port on a pseudo-terminal, and the
pump mechanism modelled from `boards/rp2_pico/pins.py`. The runner reports the physical
truth (strokes, partial strokes, tones, resets) as JSON lines; `Emulator.events` keeps
them. `theca emu` (theca.cli.emu) is the command around it; the tests use it directly.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

from theca import paths
from theca.errors import BadInput

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "runner.mjs"
FIRMWARE_NAME = "micropython-v1.28.0-RPI_PICO.uf2"
BOOTROM_NAME = "rp2040-bootrom-b1.bin"
FLASH_SIZE = 2 * 1024 * 1024
#: the official firmware's source when it is not here (the checksums are the same file's)
DOWNLOAD = "https://micropython.org/download/RPI_PICO/ (v1.28.0)"


class EmulatorError(Exception):
    """The emulator could not start or stopped: the message says why."""


#: The SHA-256 of the official firmware and the boot ROM, as this repository lists them.
SUMS = HERE / "SHA256SUMS"


def cache_rp2() -> Path:
    """The user cache the firmware is fetched into (~/.cache/theca/rp2)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "theca" / "rp2"



def listed_sums() -> dict[str, str]:
    """The SHA-256 of each file as this repository lists them (SHA256SUMS)."""
    return _parse_sums(SUMS.read_text())


def _candidates() -> list[Path]:
    # where the firmware and the boot ROM are looked for, in order (the contract's)
    env = os.environ.get("THECA_RP2_FIRMWARE")
    out = [Path(env)] if env else []
    return out + [paths.ROOT.parent / "shared" / "rp2", cache_rp2()]


def rp2_dir() -> Path:
    """Where the firmware and the boot ROM are: $THECA_RP2_FIRMWARE (if set, only there: a
    choice made is not passed over), else the workplace's ../shared/rp2 beside the
    checkout, else the user's cache (~/.cache/theca/rp2): the first that holds both files
    (the first of them if none does)."""
    env = os.environ.get("THECA_RP2_FIRMWARE")
    if env:
        return Path(env)
    cands = _candidates()
    for c in cands:
        if (c / FIRMWARE_NAME).is_file() and (c / BOOTROM_NAME).is_file():
            return c
    return cands[0]


def firmware_missing() -> str | None:
    """None if the firmware and the boot ROM are found; else what is missing, where it
    was looked for and how to get it."""
    d = rp2_dir()
    missing = [n for n in (FIRMWARE_NAME, BOOTROM_NAME) if not (d / n).is_file()]
    if not missing:
        return None
    where = ", ".join(str(c) for c in _candidates())
    return (f"{' and '.join(missing)} not found (looked in {where}): `theca emu "
            f"fetch-firmware` downloads the official MicroPython firmware ({DOWNLOAD}) and the "
            f"RP2040 boot ROM into {cache_rp2()}, or set THECA_RP2_FIRMWARE to their folder; "
            "they are checked against "
            f"{SUMS.relative_to(paths.ROOT) if SUMS.is_relative_to(paths.ROOT) else SUMS}")


def _sums(folder: Path) -> dict[str, str]:
    # the folder's own SHA256SUMS if it has one, else the repository's list
    f = folder / "SHA256SUMS"
    if not f.is_file():
        f = SUMS
    try:
        text = f.read_text()
    except OSError:
        raise BadInput(f"{f} not found: the firmware's checksums must sit beside it "
                       f"(set THECA_RP2_FIRMWARE to the folder holding {FIRMWARE_NAME}, "
                       f"{BOOTROM_NAME} and SHA256SUMS)") from None
    return _parse_sums(text)


def _parse_sums(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def _checked(path: Path, want: str | None, what: str) -> Path:
    if not path.is_file():
        raise BadInput(f"{what} {path} not found (`theca emu fetch-firmware` puts it in "
                       f"{cache_rp2()}; or set THECA_RP2_FIRMWARE to its folder)")
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if want is None:
        raise BadInput(f"{path.name} has no line in SHA256SUMS: it cannot be checked")
    if got != want:
        raise BadInput(f"{path} does not match SHA256SUMS (sha256 {got[:16]}..., want "
                       f"{want[:16]}...): a damaged or different file")
    return path


def firmware_files(firmware: Path | None = None) -> tuple[Path, Path]:
    """(the UF2, the boot ROM), each checked against SHA256SUMS. A `firmware` given
    is checked against the sums of its own folder."""
    folder = rp2_dir()
    sums = _sums(folder)
    rom = _checked(folder / BOOTROM_NAME, sums.get(BOOTROM_NAME), "the RP2040 boot ROM")
    if firmware is None:
        uf2 = _checked(folder / FIRMWARE_NAME, sums.get(FIRMWARE_NAME), "the MicroPython firmware")
    else:
        uf2 = _trusted(firmware, sums.get(FIRMWARE_NAME))
    return uf2, rom


def _trusted(path: Path, want: str | None) -> Path:
    # --firmware: the user's choice. The listed file is taken as it is; another one too,
    # since the user passed it knowingly, with a warning naming both hashes.
    if not path.is_file():
        raise BadInput(f"--firmware {path} not found")
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if got != want:
        import sys

        print(f"theca emu: warning: {path} is not the listed firmware (sha256 {got}, "
              f"SHA256SUMS lists {want}); used because you passed it", file=sys.stderr)
    return path


def node() -> str:
    found = shutil.which("node")
    if not found:
        raise BadInput("node not found: the emulator runs under Node.js 18 or newer "
                       "(Debian: apt-get install nodejs npm)")
    return found


def rp2040js_dir() -> Path:
    """The folder whose node_modules holds the pinned rp2040js: the checkout's (made by
    `make setup`), else the user's cache, installed there by npm on first use."""
    if (HERE / "node_modules" / "rp2040js" / "package.json").exists():
        return HERE
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "theca" / "emu"
    if (cache / "node_modules" / "rp2040js" / "package.json").exists():
        return cache
    npm = shutil.which("npm")
    if not npm:
        raise BadInput("npm not found: it installs the pinned rp2040js on first use")
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(HERE / name, cache / name)
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=cache,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip().splitlines()
        raise EmulatorError(f"npm ci in {cache} failed: {why[-1] if why else r.returncode}")
    return cache


def board_model(board: str = "rp2_pico") -> dict[str, Any]:
    """The board's pins.py tables (plain data), as the runner models the pump from."""
    src = (paths.BOARDS / board / "pins.py").read_text()
    out: dict[str, Any] = {}
    for node_ in ast.parse(src).body:
        if isinstance(node_, ast.Assign) and len(node_.targets) == 1:
            t = node_.targets[0]
            if isinstance(t, ast.Name) and t.id in ("PINS", "MOTOR", "BATTERY", "BUZZER"):
                out[t.id] = ast.literal_eval(node_.value)
    return out


class Emulator:
    """One emulated Pico: start() it, talk to it on `pty` as a board, stop() it.

    `events` collects the runner's JSON lines (physical truth). Sim times are
    nanoseconds of the emulated chip since this run began."""

    def __init__(self, pty: Path, flash_image: Path | None = None, firmware: Path | None = None,
                 encoder: bool = True, occlusion: bool = False, vbat_mv: int = 4000,
                 board: str = "rp2_pico", on_event: Callable[[dict], None] | None = None):
        if board != "rp2_pico":
            raise BadInput(f"theca emu emulates the rp2_pico board only, not {board!r}")
        if not 3000 <= vbat_mv <= 4300:
            raise BadInput(f"--vbat-mv {vbat_mv}: a 1S cell reads 3000..4300 mV")
        if flash_image is not None and flash_image.exists() and flash_image.stat().st_size != FLASH_SIZE:
            raise BadInput(f"{flash_image} is {flash_image.stat().st_size} bytes, not a "
                           f"{FLASH_SIZE}-byte Pico flash image")
        self.pty = Path(pty)
        self.flash_image = flash_image
        self.uf2, self.rom = firmware_files(firmware)
        self.args = {"encoder": encoder, "occlusion": occlusion, "vbat_mv": vbat_mv}
        self.events: list[dict] = []
        self.on_event = on_event
        self._cv = threading.Condition()
        self.proc: subprocess.Popen | None = None
        self._slave = self._master = -1
        self.started_wall = 0.0

    # -- life ---------------------------------------------------------------------------

    def start(self) -> Emulator:
        lib = rp2040js_dir()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: a USB CDC port carries bytes
        if self.pty.is_symlink() or self.pty.exists():
            if not self.pty.is_symlink():
                raise BadInput(f"{self.pty} exists and is not a link this command made")
            self.pty.unlink()
        os.symlink(os.ttyname(self._slave), self.pty)
        cmd = [node(), str(RUNNER), "--rp2040js", str(lib), "--firmware", str(self.uf2),
               "--bootrom", str(self.rom), "--model", json.dumps(board_model()),
               "--serial-fd", str(self._master), "--vbat-mv", str(self.args["vbat_mv"])]
        if self.flash_image is not None:
            cmd += ["--flash-image", str(self.flash_image)]
        if not self.args["encoder"]:
            cmd.append("--no-encoder")
        if self.args["occlusion"]:
            cmd.append("--occlusion")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=(self._master,), text=True,
                                     bufsize=1)
        self.started_wall = time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()
        if self.wait_for(lambda e: e["ev"] == "ready", 30) is None:
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
            self.stop()
            raise EmulatorError(f"the emulator did not start: {err.strip()[-300:] or 'no word from it'}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cv:
                self.events.append(ev)
                self._cv.notify_all()
            if self.on_event is not None:
                self.on_event(ev)
        with self._cv:
            self._cv.notify_all()

    def stop(self) -> dict | None:
        """Stop the emulator (its flash image is complete on disk); its last stats."""
        stats = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.control(stop=True)
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            stats = next((e for e in reversed(self.events) if e["ev"] == "stats"), None)
        mine = os.ttyname(self._slave) if self._slave >= 0 else None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        # only our own link: another emulator may have taken the path since
        if mine is not None and self.pty.is_symlink() and os.readlink(self.pty) == mine:
            self.pty.unlink()
        return stats

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- the pump around the chip --------------------------------------------------------

    def control(self, **kw: Any) -> None:
        """Change the world: occlusion=True/False, encoder=True/False, vbat_mv=N;
        stats=True asks for the counters; stop=True ends the run."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, pred: Callable[[dict], bool], timeout: float, start: int = 0) -> dict | None:
        """The first event from index `start` for which pred is true (None on timeout)."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cv:
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        return self.events[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive:
                    return None
                self._cv.wait(min(left, 0.5))

    def stats(self, timeout: float = 10) -> dict:
        """The runner's counters now: sim time, wall time, strokes, microsteps, boots."""
        n = len(self.events)
        self.control(stats=True)
        ev = self.wait_for(lambda e: e["ev"] == "stats", timeout, start=n)
        if ev is None:
            raise EmulatorError("the emulator did not answer")
        return ev

    def strokes(self) -> int:
        """Whole strokes the mechanism made (STEP pulses with the driver enabled)."""
        return sum(1 for e in self.events if e["ev"] == "stroke")
