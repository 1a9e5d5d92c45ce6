"""`theca --device DEV flash --board unix|rp2_pico|esp32 [--new-keys]`.

Puts the firmware on a MicroPython board (or the MicroPython unix port's REPL on a
pseudo-terminal) with the real `mpremote`, and provisions it:

1. compile the firmware and the board's modules with mpy-cross (build.py);
2. get the REPL: a board at the REPL answers a raw-REPL request at once; a board
   running Theca ignores Ctrl-C (frames may hold 0x03), so if this host has its keys
   it is sent MAINTENANCE, which gives the REPL back;
3. read the board's provision.json, if any: a board this host knows keeps its serial
   and keys (a firmware update) only if it proves it holds them: the authenticated
   answer to MAINTENANCE in step 2, or at the REPL an HMAC-SHA256 of a fresh nonce
   under the clinician key its provision.json holds. A serial alone proves nothing (any
   board can claim one): any other board gets a new serial and new keys, stored under
   $THECA_HOME *before* they are written to the board, and its old pump state (the
   `theca/` folder) is erased, since it belonged to another identity;
4. copy the .mpy files, provision.json (serial, keys, pump geometry), the drug
   library and a small main.py that starts the firmware (`import theca_main`), with
   `mpremote connect DEV resume fs cp ...` (`resume`: no soft reset, which the unix
   port's REPL cannot do);
5. start it: on a board a hard reset (machine.reset()) from the friendly REPL runs main.py; the unix
   REPL cannot reset, so its firmware modules are dropped from sys.modules and main.py
   imported with `mpremote ... exec --no-follow`;
6. check that the firmware answers GET_INFO with the serial just provisioned.
"""

from __future__ import annotations

import hmac
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from theca_protocol import names as N

from theca.board import build
from theca.errors import BadInput
from theca.inputs.druglib import device_json, load_druglib
from theca.link import keys as K
from theca.link import requests as R
from theca.link.client import Client, LinkFailure, Refused
from theca.progress import Bar

#: The pump geometry written into provision.json (the boards read these; DESIGN.md).
GEOMETRY = {"stroke_nl": N.DEFAULT_STROKE_NL, "capacity_nl": N.DEFAULT_CAPACITY_NL,
            "catheter_nl": N.DEFAULT_CATHETER_NL,
            "low_reservoir_nl": N.DEFAULT_LOW_RESERVOIR_NL,
            "max_rate_nl_h": N.DEFAULT_MAX_RATE_NL_H,
            "min_rate_nl_day": N.DEFAULT_MIN_RATE_NL_DAY}
#: The file a board runs at boot. It stays source: a board executes main.py by name.
MAIN_PY = """\
# Theca: starts the pump firmware at boot (written by `theca flash`).
# Back to the REPL, to flash again: `theca --device PORT maintenance`, or hold the
# board's safe-boot button (README, "The way back to the REPL").
import micropython

# A host may send frames while the firmware loads: a 0x03 in one must not stop it.
micropython.kbd_intr(-1)
try:
    import theca_main
except BaseException:
    micropython.kbd_intr(3)
    raise
theca_main.main()
"""
# The firmware's main.py goes to the board as theca_main.mpy: main.py is the board's
# entry point, and a main.py beside a main.mpy would shadow it. (Not "theca": that is
# the folder where the firmware keeps its state, and a folder wins an import.)
_RENAME = {"main": "theca_main"}
_MPREMOTE_TIMEOUT_S = 120
_REPL_AFTER_MAINTENANCE_S = 40
#: how long a freshly flashed board may take to answer (a real Pico: about 2 s; the
#: emulated one imports its modules at a quarter of the real chip's speed)
_BOOT_S = 30


# Run at the board's REPL: the HMAC-SHA256 of a nonce under the clinician key of its
# provision.json (MicroPython has hashlib.sha256, not hmac), in hex; "none" without one.
_PROOF = """\
import json, hashlib, binascii
try:
    _k = bytes(binascii.unhexlify(json.load(open('provision.json'))['keys']['clinician']))
except Exception:
    _k = None
if _k is None or len(_k) > 64:
    print('none')
else:
    _k = _k + bytes(64 - len(_k))
    _i = hashlib.sha256(bytes(b ^ 0x36 for b in _k) + binascii.unhexlify('{nonce}')).digest()
    print(binascii.hexlify(hashlib.sha256(bytes(b ^ 0x5C for b in _k) + _i).digest()).decode())
"""
# The unix port's board folder is a host folder: its provision.json (the keys) is made
# readable by its owner only before the keys are copied into it (a board has no modes).
_PRIVATE = "import os\nos.system('umask 077 && rm -f provision.json && : > provision.json')\n"


def mpremote() -> str:
    """The venv's mpremote (or one on PATH)."""
    cand = Path(sys.executable).parent / "mpremote"
    if cand.exists():
        return str(cand)
    found = shutil.which("mpremote")
    if not found:
        raise BadInput("mpremote not found: run `make setup`")
    return found


class Flasher:
    """One flash of one board; `run()` returns the summary line."""

    def __init__(self, device: str, board: str, new_keys: bool = False):
        self.device = device
        self.board = board
        self.new_keys = new_keys
        self.serial: str | None = None
        self.proved: str | None = None  # the serial whose key the board proved it holds
        self.fresh = False
        self.clock_was: int | None = None  # the board's clock before flash set it
        self.files: list[tuple[Path, str]] = []
        self.bytes = 0

    # -- mpremote ---------------------------------------------------------------------

    def mp(self, *args: str, check: bool = True, on_line=None) -> subprocess.CompletedProcess:
        """Run `mpremote connect DEV resume ARGS`; LinkFailure naming mpremote's complaint."""
        cmd = [mpremote(), "connect", self.device, "resume", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stderr is not None  # both PIPE
        out = bytearray()
        try:
            for line in proc.stdout:
                out += line
                if on_line is not None:
                    on_line(line.decode(errors="replace"))
            err = proc.stderr.read()
            rc = proc.wait(timeout=_MPREMOTE_TIMEOUT_S)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        res = subprocess.CompletedProcess(cmd, rc, bytes(out), err)
        if check and rc != 0:
            lines = (err or out).decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"status {rc}"
            hint = ""
            if "raw repl" in why.lower() or "failed to access" in why.lower():
                hint = (f" ({self.device} does not give its REPL: if Theca runs there, stop it "
                        f"with `theca --device {self.device} maintenance` or hold the board's "
                        "safe-boot button while it starts)")
            raise LinkFailure(f"mpremote {args[0]} {args[1] if len(args) > 1 else ''}: "
                              f"{why}{hint}".replace("  ", " "))
        return res

    # -- steps ------------------------------------------------------------------------

    def repl_ready(self, timeout: float = 1.5) -> bool:
        """True if the port answers as a MicroPython REPL (it enters the raw REPL, as
        mpremote would, but gives up in `timeout` s rather than mpremote's 10)."""
        import serial

        try:
            with serial.Serial(self.device, 115200, timeout=0.05) as s:
                s.reset_input_buffer()
                s.write(b"\r\x03\x03")  # stop a running program (where Ctrl-C still works)
                time.sleep(0.1)
                s.reset_input_buffer()
                s.write(b"\r\x01")  # raw REPL
                seen = b""
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    seen += s.read(256)
                    if b"raw REPL; CTRL-B to exit" in seen:
                        return True
        except (serial.SerialException, OSError) as e:
            raise LinkFailure(f"cannot open {self.device}: {getattr(e, 'strerror', None) or e}") from None
        return False

    def take_repl(self) -> str:
        """Get the REPL: at once, or by MAINTENANCE to a Theca this host has keys for
        (its firmware ignores Ctrl-C). Returns what was done; LinkFailure if neither.

        Frames are sent only to a port that is not at a REPL: to a REPL they would be
        typed-in garbage (a 0x04 there can end the unix port)."""
        if self.repl_ready():
            return "at the REPL"
        serial_no = K.device_serial(self.device)
        if serial_no and K.have_keys(serial_no):
            try:
                with Client(self.device, serial_no, timeout=1.0, retries=1, quiet=True) as c:
                    c.request("MAINTENANCE", b"", "clinician")
                # its answer was signed with this host's key for the serial: the proof
                self.proved = serial_no
                # the firmware winds down and the REPL comes back: at once on the unix
                # port, after a reset into its maintenance boot on a Pico (its USB port
                # goes and comes back; an emulated one boots slower than a real one)
                deadline = time.monotonic() + _REPL_AFTER_MAINTENANCE_S
                while time.monotonic() < deadline:
                    time.sleep(0.3)
                    try:
                        if self.repl_ready(3.0):
                            return f"stopped {serial_no} (MAINTENANCE)"
                    except LinkFailure:
                        pass  # the port is away while the board resets
            except (LinkFailure, Refused, BadInput):
                pass
        raise LinkFailure(
            f"{self.device} gives no REPL. If the Theca firmware runs there, stop it with "
            f"`theca --device {self.device} maintenance` (it needs the device's clinician key) "
            "or hold the board's safe-boot button (BOOTSEL on a Pico, BOOT on an ESP32) while "
            "it starts or for 3 s while it runs; then flash again")

    def provision(self) -> dict:
        """Serial and keys: the board's own if this host knows them, else new ones."""
        old = None
        r = self.mp("fs", "cat", ":provision.json", check=False)
        if r.returncode != 0 and b"No such file" not in r.stderr + r.stdout:
            self.mp("fs", "cat", ":provision.json")  # not reachable: raises, saying why
        if r.returncode == 0:
            try:
                old = json.loads(r.stdout.decode(errors="replace"))
            except ValueError:
                old = None
        serial = old.get("serial") if isinstance(old, dict) else None
        if (not self.new_keys and isinstance(serial, str) and _serial_ok(serial)
                and K.have_keys(serial) and self.proves(serial)):
            keys = K.load_keys(serial)
        else:
            if isinstance(serial, str) and not self.new_keys and K.have_keys(serial):
                print(f"theca flash: the board claims serial {serial} but does not prove it "
                      "holds its key: it gets a new serial and new keys", file=sys.stderr)
            serial = K.new_serial("TH")
            keys = K.make_keys(serial)  # on the host before they reach the board
            self.fresh = True
        self.serial = serial
        prov = {"serial": serial, "keys": {r: k.hex() for r, k in keys.items()}, **GEOMETRY}
        if isinstance(old, dict):
            # settings a deployment made for this board are kept: its link and motor, and
            # the pump geometry measured on the bench (a calibrated stroke volume must
            # survive a firmware update: docs/hardware.md, calibration by weighing)
            for k in ("link", "motor", "reservoir_nl", *GEOMETRY):
                if k in old:
                    prov[k] = old[k]
        return prov

    def proves(self, serial: str) -> bool:
        """The board holds this host's clinician key for `serial`: it answered MAINTENANCE
        with it, or answers a fresh nonce with the key's HMAC now (at its REPL)."""
        if self.proved == serial:
            return True
        nonce = secrets.token_bytes(16)
        r = self.mp("exec", _PROOF.replace("{nonce}", nonce.hex()), check=False)
        lines = r.stdout.decode(errors="replace").split()
        want = hmac.new(K.load_key(serial, "clinician"), nonce, "sha256").hexdigest()
        return bool(lines) and hmac.compare_digest(lines[-1], want)

    def stage(self, prov: dict, work: Path) -> None:
        """Everything that goes to the board, in `work`."""
        mpy = build.compile_firmware(self.board)
        for src in build.sources(self.board):
            if src.name in build.KEEP_SOURCE:  # a module the build leaves as source
                name, path = _RENAME.get(src.stem, src.stem) + ".py", src
            else:
                name, path = _RENAME.get(src.stem, src.stem) + ".mpy", mpy / (src.stem + ".mpy")
            dst = work / name
            shutil.copyfile(path, dst)
            self.files.append((dst, name))
        extra = [("main.py", MAIN_PY), ("provision.json", json.dumps(prov, indent=1) + "\n"),
                 ("druglib.json", device_json(load_druglib()))]
        for name, text in extra:
            dst = work / name
            dst.touch(mode=0o600)  # (the keys: readable by this user only, here too)
            dst.write_text(text)
            self.files.append((dst, name))
        self.bytes = sum(p.stat().st_size for p, _ in self.files)

    def copy(self, bar: Bar, base: int) -> None:
        """One mpremote run copying every file; the bar follows its `cp` lines."""
        args: list[str] = []
        if self.fresh:
            # another identity's therapy state must not carry over to new keys
            args += ["exec", _WIPE_STATE, "+"]
        if self.board == "unix":
            args += ["exec", _PRIVATE, "+"]
        for i, (p, name) in enumerate(self.files):
            if i:
                args.append("+")
            args += ["fs", "cp", str(p), ":" + name]
        done = [base]

        def line(s: str) -> None:
            if s.startswith("cp "):
                done[0] += 1
                bar.update(done[0])

        self.mp(*args, on_line=line)

    def start(self) -> None:
        """Run the new firmware."""
        if self.board == "unix":
            names = [_RENAME.get(s.stem, s.stem) for s in build.sources(self.board)] + ["main"]
            code = f"import sys\nfor _m in {names!r}:\n    sys.modules.pop(_m, None)\nimport main\n"
            self.mp("exec", "--no-follow", code)
            return
        # A board: a hard reset from the friendly REPL (machine.reset()), which runs
        # main.py and leaves a Pico's maintenance boot (a soft reset would keep it:
        # boards/rp2_pico/board.py).
        import serial

        try:
            with serial.Serial(self.device, 115200, timeout=0.5) as s:
                s.write(b"\r\x03\x03")
                time.sleep(0.2)
                s.write(b"\r\x02")
                time.sleep(0.2)
                s.reset_input_buffer()
                s.write(b"import machine; machine.reset()\r")
                s.flush()
                time.sleep(0.2)
        except (serial.SerialException, OSError) as e:
            raise LinkFailure(f"cannot restart the board on {self.device}: {e}") from None

    def _set_clock(self, c: Client, device_now: int) -> int | None:
        # The board's clock from this host's, as `mpremote rtc --set` sets it (a Pico's RTC
        # restarts at 2021-01-01 after a hardware reset): through SET_TIME, so the pump
        # logs it. Returns the device time it had, or None if it was right (within a
        # minute) or the pump refused (a prescription's schedule the change would break).
        from theca.inputs.timezone import now_device

        now = now_device()
        if abs(device_now - now) <= _CLOCK_SLACK_S:
            return None
        try:
            c.request("SET_TIME", R.set_time(now, 0), "clinician")
        except Refused:
            return None
        return device_now

    def verify(self) -> dict:
        """The new firmware answers with the serial just provisioned."""
        assert self.serial is not None  # provision() chose it
        K.remember_device(self.device, self.serial)
        deadline = time.monotonic() + _BOOT_S
        while True:
            try:
                with Client(self.device, self.serial, timeout=1.0, retries=_BOOT_S - 1,
                            quiet=True) as c:
                    info = c.identify("clinician")
                    rep = c.request("GET_STATUS", b"", "clinician")
                    self.clock_was = self._set_clock(c, rep.time)
                return info
            except LinkFailure as e:
                # a board's USB port is away for a moment while it resets
                if "cannot open" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


#: A board clock within this of the host's is left alone, s.
_CLOCK_SLACK_S = 60

_WIPE_STATE = (
    "import os\n"
    "try:\n"
    "    for _f in os.listdir('theca'):\n"
    "        os.remove('theca/' + _f)\n"
    "    os.rmdir('theca')\n"
    "except OSError:\n"
    "    pass\n"
)


def _serial_ok(s: str) -> bool:
    try:
        K.check_serial(s)
        return True
    except BadInput:
        return False
