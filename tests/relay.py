"""A relay between a host and a pump: a pseudo-terminal the host talks to, forwarding to
the pump's port, that can record, drop, hold, alter and forge frames (the attacker of
issue 12, in the middle of the link).

`with Relay(pump_pty, host_pty) as r:` forwards everything. `r.on_host` and
`r.on_device` are hooks called with each decoded frame (CRC-checked or not) going that
way; a hook returns the frames to forward instead (`[]` drops it, `[f]` passes it). The
hooks may call `r.to_host(frame)` / `r.to_device(frame)` to inject frames. `r.seen` holds
(direction, frame) of every frame, in order.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from collections.abc import Callable
from pathlib import Path

import serial
import theca_protocol as tp

Hook = Callable[[bytes], list[bytes]]


def _pass(frame: bytes) -> list[bytes]:
    return [frame]


class Relay:
    """Man in the middle on the serial link (see the module docstring)."""

    def __init__(self, pump: Path | str, host_path: Path):
        self.pump = serial.Serial(str(pump), baudrate=115200, timeout=0)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = Path(host_path)
        if self.path.is_symlink():
            self.path.unlink()
        os.symlink(os.ttyname(self.slave), self.path)
        self.on_host: Hook = _pass
        self.on_device: Hook = _pass
        self.seen: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._bufs = {"host": bytearray(), "device": bytearray()}
        self.error: BaseException | None = None
        self._th = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Relay:
        self._th.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop forwarding; remove the host's path."""
        self._stop.set()
        self._th.join(timeout=5)
        self.pump.close()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.path.is_symlink():
            self.path.unlink()

    # -- injection -------------------------------------------------------------------
    def to_host(self, frame: bytes) -> None:
        """Send a frame to the host as if the pump had sent it."""
        os.write(self.master, b"\x00" + tp.cobs_encode(frame) + b"\x00")

    def to_device(self, frame: bytes) -> None:
        """Send a frame to the pump as if the host had sent it."""
        self.pump.write(b"\x00" + tp.cobs_encode(frame) + b"\x00")
        self.pump.flush()

    # -- the loop ----------------------------------------------------------------------
    def _chunks(self, side: str, data: bytes) -> None:
        buf = self._bufs[side]
        buf += data
        while True:
            i = buf.find(0)
            if i < 0:
                return
            chunk = bytes(buf[:i])
            del buf[: i + 1]
            if not chunk:
                continue
            try:
                frame = tp.cobs_decode(chunk)
            except tp.CobsError:
                frame = None
            send = self.to_device if side == "host" else self.to_host
            if frame is None:  # not a frame: forwarded as it came
                (self.pump.write if side == "host" else
                 (lambda b: os.write(self.master, b)))(chunk + b"\x00")
                continue
            with self.lock:
                self.seen.append((side, frame))
                hook = self.on_host if side == "host" else self.on_device
                out = hook(frame)
            for f in out:
                send(f)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 (kept for the test to see)
            self.error = e
            raise

    def _loop(self) -> None:
        pfd = self.pump.fileno()
        while not self._stop.is_set():
            r, _, _ = select.select([self.master, pfd], [], [], 0.05)
            if self.master in r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if data:
                    self._chunks("host", data)
            if pfd in r:
                data = self.pump.read(self.pump.in_waiting or 1)
                if data:
                    self._chunks("device", data)


def frame_type(frame: bytes) -> int:
    """The message type of a frame (0 if too short)."""
    return frame[1] if len(frame) > 1 else 0


def command_head(frame: bytes):
    """(cmd_id, role, counter, challenge) of a command frame."""
    return tp.compiled(tp.CommandHead).unpack_from(frame, tp.HDR_SIZE)


def forged_reply(cmd: bytes, result: int = 0, detail: int = 0, body: bytes = b"") -> bytes:
    """A REPLY to command frame `cmd` as a relay without the key makes it: the right
    cmd_id and type, a MAC of random bytes."""
    cmd_id = command_head(cmd)[0]
    fr = tp.build_reply(None, 0, 0, cmd_id, frame_type(cmd), result, detail, body, 7,
                        int.from_bytes(cmd[4:8], "little"))
    mac_at = len(fr) - tp.CRC_SIZE - tp.MAC_SIZE
    raw = fr[:mac_at] + os.urandom(tp.MAC_SIZE)
    return raw + tp.crc32(raw).to_bytes(4, "little")
