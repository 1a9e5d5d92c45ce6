"""`theca twin --pty PATH [--speed N] [--heapsize SIZE] [--flash-image FILE] [--reservoir-ml X]`.

A live twin: the firmware's own main.py on the MicroPython unix port, in real time
(or `--speed N` times faster), its link a pseudo-terminal. PATH becomes a symlink to
the pty's slave side, which host tools open with pyserial exactly as a USB-serial
board's port; the micropython process gets the master side as stdin and stdout (the
board's StdioLink). This process keeps the slave open too, so the link never hangs up
between two host commands, and the master non-blocking, so a host that stops reading
can never stall therapy.

Keys: a twin without a flash image is a new device every time it starts: a fresh
serial and fresh clinician and patient keys, stored under $THECA_HOME. With
`--flash-image FILE`, keys are made when FILE does not exist yet (a new pump) and the
serial is written beside it in FILE.serial; a twin started again on that image is the
same device and uses the keys already in $THECA_HOME.

SIGINT or SIGTERM stops it: the firmware process is ended (for the pump, a power
cut: a flash image is made to survive that), the PATH symlink removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

from theca_protocol import names as N
from theca_protocol import storage as S

from theca.board.build import compile_firmware
from theca.errors import LINK_FAILURE, OK, BadInput
from theca.inputs.druglib import write_device_library
from theca.link import keys as K
from theca.link.client import Client, LinkFailure, Refused
from theca.twin import proc as twinproc
from theca.twin.run import heap_ok

#: The twin pump's geometry (docs/DESIGN.md "Twin configuration").
STROKE_NL = N.DEFAULT_STROKE_NL
CAPACITY_NL = N.DEFAULT_CAPACITY_NL
CATHETER_NL = N.DEFAULT_CATHETER_NL
LOW_RESERVOIR_NL = N.DEFAULT_LOW_RESERVOIR_NL
TWIN_FAILED = 1
TWIN_WATCHDOG = S.TWIN_EXIT["watchdog"]
# how long the firmware gets to answer its first GET_INFO (process start, flash mount)
_READY_S = 20.0


def _serial_file(image: Path) -> Path:
    return image.with_name(image.name + ".serial")


def device_keys(image: Path | None) -> tuple[str, dict[str, bytes], bool]:
    """(serial, keys, new) for a twin on `image` (None: no image, always new)."""
    if image is not None and image.exists():
        sf = _serial_file(image)
        try:
            serial = sf.read_text().strip()
        except FileNotFoundError:
            raise BadInput(f"--flash-image: {image} exists but {sf} does not say which device it "
                           "is; give a new file name to start a new pump") from None
        K.check_serial(serial)
        return serial, K.load_keys(serial), False
    serial = K.new_serial("TWIN")
    if image is None:
        # a twin without an image lives only while it runs: its keys in its folder
        keys = {role: secrets.token_bytes(K.KEY_BYTES) for role in K.ROLES}
        K.make_twin_dir(serial, keys)
        return serial, keys, True
    keys = K.make_keys(serial)
    if image is not None:
        # the serial beside the image: the next start on it is the same device
        tmp = image.with_name(f".{image.name}.serial.tmp")
        tmp.write_text(serial + "\n")
        os.replace(tmp, _serial_file(image))
    return serial, keys, True


def twin_config(serial: str, keys: dict[str, bytes], speed: int, reservoir_nl: int,
                image: Path | None, work: Path) -> dict:
    """The live twin's configuration (docs/DESIGN.md "Twin configuration"); the device's
    drug library goes into `work`."""
    hexkeys = {r: k.hex() for r, k in keys.items()}
    return {
        "mode": "live",
        "link_nonblocking": True,  # the master is O_NONBLOCK (see boards/unix StdioLink)
        "speed": speed,
        "serial": serial,
        "keys": hexkeys,
        "provision": {"serial": serial, "keys": hexkeys},
        "stroke_nl": STROKE_NL,
        "capacity_nl": CAPACITY_NL,
        "catheter_nl": CATHETER_NL,
        "low_reservoir_nl": LOW_RESERVOIR_NL,
        "reservoir_nl": reservoir_nl,
        "battery_days": 2555,
        "status_period_s": 0,
        "druglib": str(write_device_library(work)),
        "flash_image": str(image) if image is not None else None,
        # The twin's watchdog bites after wdt_s device seconds. At --speed N that is
        # wdt_s / N real seconds: keep it at least 5, so that a busy host pausing the
        # process is not taken for a hung pump.
        "wdt_s": max(1200, 5 * speed),
    }


def open_pty(path: Path) -> tuple[int, int, str]:
    """A raw pseudo-terminal; PATH -> its slave. Returns (master, slave, slave name)."""
    if path.is_symlink():
        path.unlink()  # a previous twin's, left behind
    elif path.exists():
        raise BadInput(f"--pty: {path} exists and is not a symlink; not replacing it")
    if not path.parent.is_dir():
        raise BadInput(f"--pty: folder {path.parent} does not exist")
    master, slave = os.openpty()
    # raw: no echo, no CR/LF translation, no signals from 0x03 bytes; the master's
    # settings are the slave's, so once is enough
    tty.setraw(slave)
    fl = fcntl.fcntl(master, fcntl.F_GETFL)
    fcntl.fcntl(master, fcntl.F_SETFL, fl | os.O_NONBLOCK)
    name = os.ttyname(slave)
    os.symlink(name, path)
    return master, slave, name


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this process dies, however it dies (a
    SIGKILL too), so a firmware process is never left running with nobody on its pty."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # not Linux: stopping the twin with a signal still cleans up


_DRAIN_S = 1.0  # how long the pty stays after the firmware left, for its last reply


def _checked(args) -> tuple[int, int, Path | None, Path]:
    # (speed, reservoir nL, flash image, pty path) from the command line, or BadInput
    speed = args.speed
    if speed < 1:
        raise BadInput(f"--speed: {speed} is not a whole number >= 1")
    if args.heapsize and not heap_ok(args.heapsize):
        raise BadInput(f"--heapsize: {args.heapsize!r} is not a size like 64k, 128k or 1m")
    res_nl = round(args.reservoir_ml * 1_000_000)
    if not 0 <= res_nl <= CAPACITY_NL:
        raise BadInput(f"--reservoir-ml: {args.reservoir_ml:g} mL is outside "
                       f"0..{CAPACITY_NL / 1e6:g} mL")
    image = Path(args.flash_image).resolve() if args.flash_image else None
    if image is not None and not image.parent.is_dir():
        raise BadInput(f"--flash-image: folder {image.parent} does not exist")
    return speed, res_nl, image, Path(os.path.abspath(args.pty))


def _wait_ready(proc: subprocess.Popen, pty_path: Path, serial: str,
                stop: list[int]) -> dict | int:
    # the firmware's DEVICE_INFO once it answers, or the exit status to return
    deadline = time.monotonic() + _READY_S
    while True:
        try:
            with Client(str(pty_path), serial, timeout=0.5, retries=0, quiet=True) as c:
                return c.identify("clinician")
        except (LinkFailure, Refused) as e:
            if proc.poll() is not None:
                print(f"theca twin: the firmware stopped with status {proc.returncode}",
                      file=sys.stderr)
                return TWIN_FAILED
            if stop:
                return OK
            if time.monotonic() > deadline:
                print(f"theca twin: the twin does not answer on {pty_path}: {e}",
                      file=sys.stderr)
                return LINK_FAILURE


def _serve(proc: subprocess.Popen, serial: str, stop: list[int]) -> int:
    # until a signal or the firmware's end; the exit status
    while not stop:
        try:
            rc = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        if rc == 0:
            print(f"twin {serial}: the firmware returned to the REPL (MAINTENANCE); stopped")
            time.sleep(_DRAIN_S)  # let the host read the MAINTENANCE reply first
            return OK
        why = " (a watchdog reset: the therapy task hung)" if rc == TWIN_WATCHDOG else ""
        print(f"theca twin: the firmware stopped with status {rc}{why}", file=sys.stderr)
        return TWIN_FAILED
    print(f"twin {serial}: stopped ({signal.Signals(stop[0]).name})", flush=True)
    return OK


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()  # for the pump: its supply is cut
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _release_pty(fds: tuple[int, int], pty_path: Path, slave_name: str | None) -> None:
    for fd_ in fds:
        if fd_ >= 0:
            with contextlib.suppress(OSError):
                os.close(fd_)
    with contextlib.suppress(OSError):
        # only our own link: another twin may have taken PATH meanwhile
        if slave_name and pty_path.is_symlink() and os.readlink(pty_path) == slave_name:
            pty_path.unlink()


def run_live(args) -> int:
    """`theca twin`: start the live twin, say "ready" once it answers, run until a
    signal (or MAINTENANCE ends the firmware), then clean up."""
    speed, res_nl, image, pty_path = _checked(args)
    # the folders (and keys) of twins that were killed: gone before this one starts
    K.reap_twins()
    for what, path, opt in (("pty", pty_path, "--pty"), ("image", image, "--flash-image")):
        held = K.twin_using(str(path), what) if path is not None else None
        if held:
            raise BadInput(f"{opt}: {path} is in use by twin {held[0]} (pid {held[1]}); "
                           "stop it first or give another path")
    mpy = None if args.source else compile_firmware("unix")
    serial, keys, new = device_keys(image)

    stop: list[int] = []

    def on_signal(signum, _frame):
        stop.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    uses = {"pty": str(pty_path), **({"image": str(image)} if image else {})}
    work = K.make_twin_dir(serial, uses=uses)  # 0700 under $THECA_HOME: it holds the keys
    master = slave = -1
    slave_name = None
    proc = None
    try:
        cfgp = work / "twin.json"
        fd = os.open(cfgp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds keys
        with os.fdopen(fd, "w") as f:
            json.dump(twin_config(serial, keys, speed, res_nl, image, work), f)
        master, slave, slave_name = open_pty(pty_path)
        proc = subprocess.Popen(
            twinproc.twin_command(args.heapsize, mpy is not None),
            env=twinproc.twin_env(cfgp, mpy), stdin=master, stdout=master,
            # its own session: a Ctrl-C on the terminal reaches this process, which
            # stops the twin in order, and not the firmware directly
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        # This process keeps its copy of the master (it never reads it): the pty must
        # outlive the firmware for a moment, as a board's USB port outlives its REPL, or
        # the host loses a last reply still in the pty (Linux drops it with EIO).
        K.remember_device(str(pty_path), serial)
        info = _wait_ready(proc, pty_path, serial, stop)
        if not isinstance(info, dict):
            return info
        state = "new pump" if new else "restarted"
        print(f"twin {serial} ({state}) on {pty_path} -> {slave_name}, {speed}x real time, "
              f"firmware {info['fw_major']}.{info['fw_minor']}.{info['fw_patch']}"
              + (f", flash image {image}" if image else ""))
        print(f"keys: {K.key_path(serial, 'clinician')}, {K.key_path(serial, 'patient')}")
        print("ready (Ctrl-C stops the twin)", flush=True)
        return _serve(proc, serial, stop)
    finally:
        _stop(proc)
        _release_pty((master, slave), pty_path, slave_name)
        K.remove_twin_dir(serial)
        for s, h in old.items():
            signal.signal(s, h)


class LiveTwin:
    """`theca twin` in a child process, for tests, benchmarks and scripts.

    `with LiveTwin(pty, speed=600) as t:` starts it, waits for its "ready" line and
    gives `t.serial`; leaving the block stops it with SIGTERM (as Ctrl-C would).
    `env` is the child's environment (THECA_HOME!); `args` extra twin options.
    """

    def __init__(self, pty, speed: int = 1, env: dict | None = None, args=(),
                 ready_s: float = 60.0):
        self.pty = str(pty)
        self.cmd = [sys.executable, "-m", "theca.cli", "twin", "--pty", self.pty,
                    "--speed", str(speed), *map(str, args)]
        self.env = env
        self.ready_s = ready_s
        self.proc: subprocess.Popen | None = None
        self.serial: str | None = None
        self.banner: list[str] = []

    def __enter__(self) -> LiveTwin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LiveTwin:
        """Start and wait until the firmware answers (the twin's "ready" line)."""
        import queue
        import threading

        self.err = tempfile.TemporaryFile()  # the firmware's complaints, if any
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True)
        lines: queue.Queue = queue.Queue()

        def reader(out=self.proc.stdout):
            for line in out:
                lines.put(line)
            lines.put(None)

        # a thread, since a buffered pipe may hold several lines for one select()
        threading.Thread(target=reader, daemon=True).start()
        self.lines = lines
        deadline = time.monotonic() + self.ready_s
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            self.banner.append(line.rstrip("\n"))
            if line.startswith("twin "):
                self.serial = line.split()[1]
            if line.startswith("ready"):
                return self
            if time.monotonic() > deadline:
                break
        self.stop()
        self.err.seek(0)
        err = self.err.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"theca twin did not start: {' | '.join(self.banner)} {err}")

    def output(self, timeout: float = 5.0) -> str:
        """What the twin printed after "ready", until it ends or `timeout` passes."""
        import queue

        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            out.append(line)
        return "".join(out)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Stop it (SIGTERM by default); returns its exit status."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode


