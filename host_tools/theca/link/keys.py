"""Device keys, command counters and known devices, kept on the host under $THECA_HOME.

Layout of `$THECA_HOME` (default `~/.config/theca`, mode 0700):

- `SERIAL-clinician.key`, `SERIAL-patient.key`: one 32-byte key each, as 64 hex digits
  and a newline, mode 0600. Made by `theca flash` (or `theca twin` on a new flash
  image); never sent to a device in any frame, never written into a log.
- `SERIAL-ROLE.counter`: the last command counter used with that key (decimal). A
  device refuses a counter that does not rise (`replay`), so the next one is taken
  and written here *before* a command is sent: a new process, or a crash between
  writing and sending, can only skip numbers, never reuse one.
- `devices.json`: which serial answers on which device path (written by `theca twin`
  and `theca flash`), so `theca --device DEV status` knows which keys to use.
- `twins/SERIAL/` (mode 0700): a running `theca twin`'s folder: its configuration, its
  `pid`, and, for a twin without a flash image, its keys and counters
  (`clinician.key`...). Removed when the twin ends; a twin killed with SIGKILL leaves
  it, and the next `theca twin` removes the folders of twins no longer running.

A key file that group or others can read is refused, as ssh refuses such a private
key: the message says the `chmod` that fixes it.

Everything is written atomically (a temporary file renamed over the old one) and the
counter under an exclusive `flock`, so two programmers at once never share a counter.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from pathlib import Path

from theca.errors import BadInput

#: Role names and their ids on the wire.
ROLES = {"clinician": 1, "patient": 2}
KEY_BYTES = 32
# A serial is the 12-byte ASCII field of DEVICE_INFO; it is also part of file names.
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_-]{1,12}$")


def home() -> Path:
    """`$THECA_HOME`, or `~/.config/theca`; created (0700) when first needed."""
    p = Path(os.environ.get("THECA_HOME") or "~/.config/theca").expanduser()
    return p


def _ensure_home() -> Path:
    p = home()
    p.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        p.chmod(0o700)
    return p


def check_serial(serial: str) -> str:
    """The serial if it is usable (1..12 letters, digits, '-' or '_'); BadInput if not."""
    if not isinstance(serial, str) or not _SERIAL_RE.match(serial):
        raise BadInput(f"device serial {serial!r} is not 1 to 12 letters, digits, '-' or '_'")
    return serial


def new_serial(prefix: str) -> str:
    """A fresh 12-character serial: `prefix` then random digits (TWIN12345678)."""
    digits = 12 - len(prefix)
    return prefix + "".join(str(secrets.randbelow(10)) for _ in range(digits))


_OWN_KEYS = "own-keys"  # in a twin's folder: its keys are there, not in $THECA_HOME


def twin_dir(serial: str) -> Path:
    """The folder of a running twin `serial` under $THECA_HOME/twins."""
    return home() / "twins" / check_serial(serial)


def key_path(serial: str, role: str) -> Path:
    """Where the key of `role` for device `serial` is kept (a running twin's own, if it
    has one, else $THECA_HOME/SERIAL-ROLE.key)."""
    d = twin_dir(serial)
    if (d / _OWN_KEYS).exists():
        return d / f"{role}.key"
    return home() / f"{check_serial(serial)}-{role}.key"


def counter_path(serial: str, role: str) -> Path:
    """Where the last counter used with that key is kept."""
    d = twin_dir(serial)
    if (d / _OWN_KEYS).exists():
        return d / f"{role}.counter"
    return home() / f"{check_serial(serial)}-{role}.counter"


def make_twin_dir(serial: str, keys: dict[str, bytes] | None = None,
                  uses: dict[str, str] | None = None) -> Path:
    """A twin's folder (0700) with its `pid`; with `keys`, its own keys (0600) and
    counters, which go when the folder goes; `uses` (`pty`, `image`: paths) says what
    it holds, so that no second twin takes them over."""
    _ensure_home()
    d = twin_dir(serial)
    d.parent.mkdir(mode=0o700, exist_ok=True)
    d.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):
        d.parent.chmod(0o700)
        d.chmod(0o700)
    write_private(d / "pid", f"{os.getpid()}\n")
    _hold(d)
    if uses:
        write_private(d / "uses.json", json.dumps(uses))
    for role, key in (keys or {}).items():
        if role not in ROLES or len(key) != KEY_BYTES:
            raise ValueError(f"bad key for role {role!r}")
        write_private(d / f"{role}.key", key.hex() + "\n")
        write_private(d / f"{role}.counter", "0\n")
    if keys:
        write_private(d / _OWN_KEYS, "")
    return d


def remove_twin_dir(serial: str) -> None:
    """Remove a twin's folder and the keys in it."""
    import shutil

    d = twin_dir(serial)
    fd = _HELD.pop(str(d), None)
    if fd is not None:
        os.close(fd)  # (this process's own twin: its lock goes with its folder)
    shutil.rmtree(d, ignore_errors=True)


# The twins this process runs hold an exclusive flock on their folder's `lock` for as long
# as the process lives: the kernel drops it when the process dies, however it dies (a
# SIGKILL'ed twin whose parent has not reaped it is a zombie: its pid answers, its lock
# does not). The fds stay open on purpose.
_HELD: dict[str, int] = {}  # folder -> the fd holding its lock


def _hold(d: Path) -> None:
    if str(d) in _HELD:
        return  # this process holds it already (the folder was made twice)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD[str(d)] = fd


def _running(d: Path, pid: int) -> bool:
    """Whether the twin of folder `d` (its process `pid`) still runs: its lock is held."""
    try:
        fd = os.open(d / "lock", os.O_RDWR)
    except FileNotFoundError:
        return pid > 0 and _alive(pid)  # a folder of an older theca: its pid says
    except OSError:
        return True  # cannot tell: never take a running twin's port over
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (closing drops the lock this probe may have taken)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def twin_using(path: str, what: str) -> tuple[str, int] | None:
    """(serial, pid) of a running twin that holds `path` as its `what` (`pty`, `image`)."""
    root = home() / "twins"
    if not root.is_dir():
        return None
    for d in sorted(root.iterdir()):
        try:
            uses = json.loads((d / "uses.json").read_text())
            pid = int((d / "pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and uses.get(what) == str(path) and _running(d, pid):
            return d.name, pid
    return None


def reap_twins() -> list[str]:
    """Remove the folders (and keys) of twins no longer running; returns their serials."""
    root = home() / "twins"
    gone: list[str] = []
    if not root.is_dir():
        return gone
    for d in sorted(root.iterdir()):
        if not d.is_dir() or not _SERIAL_RE.match(d.name):
            continue
        try:
            pid = int((d / "pid").read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid != os.getpid() and not _running(d, pid):
            remove_twin_dir(d.name)
            gone.append(d.name)
    return gone


def write_private(path: Path, data: str, mode: int = 0o600) -> None:
    """Replace `path` with `data`, atomically (a temporary beside it, synced, renamed over),
    readable by this user only (`mode`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def store_keys(serial: str, keys: dict[str, bytes]) -> dict[str, Path]:
    """Write a device's keys (role -> 32 bytes) and start their counters afresh.

    Returns role -> key file. A counter starts again at 0 only together with a new
    key: the device, provisioned with the new key, has seen no counter for it yet.
    """
    _ensure_home()
    out = {}
    for role, key in keys.items():
        if role not in ROLES or len(key) != KEY_BYTES:
            raise ValueError(f"bad key for role {role!r}")
        p = key_path(serial, role)
        write_private(p, key.hex() + "\n")
        write_private(counter_path(serial, role), "0\n")
        out[role] = p
    return out


def make_keys(serial: str) -> dict[str, bytes]:
    """Fresh random clinician and patient keys for `serial`, stored; returns them."""
    keys = {role: secrets.token_bytes(KEY_BYTES) for role in ROLES}
    store_keys(serial, keys)
    return keys


def load_key(serial: str, role: str) -> bytes:
    """The key of `role` for `serial`; BadInput naming the file if it is missing or bad."""
    p = key_path(serial, role)
    try:
        mode = p.stat().st_mode
        if mode & 0o077:
            raise BadInput(f"the {role} key {p} can be read by others (mode "
                           f"{mode & 0o777:04o}): a device key must be private to you; fix "
                           f"it with `chmod 600 {p}`")
        text = p.read_text().strip()
    except FileNotFoundError:
        raise BadInput(f"no {role} key for device {serial}: {p} does not exist "
                       "(keys are made by `theca flash` or `theca twin` and kept in "
                       "$THECA_HOME)") from None
    except OSError as e:
        raise BadInput(f"cannot read the {role} key {p}: {e.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise BadInput(f"{p}: not a Theca key (expected {2 * KEY_BYTES} hex digits)")
    return key


def load_keys(serial: str) -> dict[str, bytes]:
    """Both keys of `serial` (BadInput naming the first missing file)."""
    return {role: load_key(serial, role) for role in ROLES}


def have_keys(serial: str) -> bool:
    """True if both key files of `serial` exist."""
    return all(key_path(serial, r).exists() for r in ROLES)


def known_serials() -> list[str]:
    """Serials with at least one key file under $THECA_HOME, sorted."""
    h = home()
    if not h.is_dir():
        return []
    out = set()
    for p in h.glob("*.key"):
        m = re.match(r"^(.+)-(clinician|patient)\.key$", p.name)
        if m and _SERIAL_RE.match(m.group(1)):
            out.add(m.group(1))
    for p in h.glob("twins/*/*.key"):
        if _SERIAL_RE.match(p.parent.name):
            out.add(p.parent.name)
    return sorted(out)


@contextlib.contextmanager
def _locked(path: Path):
    _ensure_home()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing drops the lock


def _read_int(fd: int, path: Path) -> int:
    # the stored counter: empty is 0; anything but a whole number the wire can carry is
    # named with its fix (it was a traceback on every command: issue 23)
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    if not text:
        return 0
    if text.isascii() and text.isdigit() and int(text) <= 0xFFFFFFFF:
        return int(text)
    raise BadInput(f"{path} holds {text[:20]!r}, not a command counter (a whole number 0 to "
                   "4294967295): delete the file and the next command learns the device's "
                   "last counter from its `replay` answer and goes on past it")


def _write_int(fd: int, v: int) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, f"{v}\n".encode())
    os.fsync(fd)  # on disk before the command that uses it leaves the host


def next_counter(serial: str, role: str) -> int:
    """Take the next counter for this key: stored + 1, written back before returning."""
    path = counter_path(serial, role)
    with _locked(path) as fd:
        v = _read_int(fd, path) + 1
        if v > 0xFFFFFFFF:
            raise BadInput(f"the {role} key of {serial} has used every counter: flash new keys")
        _write_int(fd, v)
        return v


def raise_counter(serial: str, role: str, at_least: int) -> None:
    """Make sure the next counter is above `at_least` (a device told us its last one)."""
    path = counter_path(serial, role)
    with _locked(path) as fd:
        if _read_int(fd, path) < at_least:
            _write_int(fd, at_least)


def last_counter(serial: str, role: str) -> int:
    """The last counter used with this key (0: none yet)."""
    p = counter_path(serial, role)
    if not p.exists():
        return 0
    with _locked(p) as fd:
        return _read_int(fd, p)


# --- which device is where ------------------------------------------------------------


def _devices_path() -> Path:
    return home() / "devices.json"


def device_key(device: str) -> str:
    """How a device path is remembered: absolute, symlinks kept (a twin's PATH is a
    symlink to a /dev/pts/N that changes from run to run)."""
    return os.path.abspath(device)


def remember_device(device: str, serial: str) -> None:
    """Record that `serial` answers on `device`."""
    check_serial(serial)
    with _locked(home() / ".devices.lock"):
        p = _devices_path()
        try:
            m = json.loads(p.read_text())
            if not isinstance(m, dict):
                m = {}
        except (OSError, ValueError):
            m = {}
        m[device_key(device)] = serial
        write_private(p, json.dumps(m, indent=1, sort_keys=True) + "\n", 0o600)


def device_serial(device: str) -> str | None:
    """The serial last seen on `device`, if any."""
    try:
        m = json.loads(_devices_path().read_text())
    except (OSError, ValueError):
        return None
    s = m.get(device_key(device)) if isinstance(m, dict) else None
    return s if isinstance(s, str) and _SERIAL_RE.match(s) else None


def resolve_serial(device: str, serial: str | None = None) -> str:
    """Which device's keys to use on `device`: `serial` if given, else the one last seen
    there, else the only device with keys here. BadInput when it cannot be known."""
    if serial:
        return check_serial(serial)
    s = device_serial(device)
    if s:
        return s
    known = known_serials()
    if len(known) == 1:
        return known[0]
    if not known:
        raise BadInput(f"no device keys in {home()}: flash the device (`theca flash`) or start "
                       "a twin (`theca twin`) first, or set THECA_HOME")
    raise BadInput(f"keys of several devices are in {home()} ({', '.join(known)}) and none is "
                   f"known to be on {device}: say which with THECA_SERIAL=SERIAL")
