# The bench rig for board tests: a fresh fake world wired as docs/hardware.md says,
# a littlefs2 filesystem in RAM with provision.json and druglib.json, and a host on
# the other end of the UART link.
#
# The wiring here is written from docs/hardware.md's tables, not read from the
# board's pins.py: a pins.py that disagrees with the documented wiring fails the tests.
import json
import os

import fakeworld
import msgdefs as md
from codec import cobs_decode_inplace, cobs_frame_into
from fakehw import CLIN_KEY, PAT_KEY, Host, reply

WIRING = {
    "rp2_pico": {"step": 2, "dir": 3, "enable": 4, "feedback": 6, "occlusion": 7, "buzzer": 15,
                 "battery_adc": 28, "led": 25, "uart": 0},
    "esp32": {"step": 25, "dir": 26, "enable": 27, "feedback": 32, "occlusion": 33, "buzzer": 23,
              "battery_adc": 35, "led": 2, "safe_boot": 0, "uart": 2},
}
DIVIDER_K = (100, 100)  # cell - 100k - ADC pin - 100k - GND
# 200-step motor at 1/16 microstepping; a 50-slot disc read on both edges
MICROSTEPS_PER_REV = 3200
EDGES_PER_REV = 100
MICROSTEPS_PER_STROKE = 128  # docs/hardware.md, "Mechanism"
DEVICE_T0 = 189_388_800  # 2026-01-01T00:00:00Z in device seconds
# device seconds -> board-epoch seconds: the port's epoch (rp2 1970, esp32 2000); setup()
# sets it for the board of the world it makes
TO_BOARD = md.EPOCH_UNIX - fakeworld.BOARD_EPOCH
DAY = 86400

PROVISION = {
    "serial": "BENCH0000001",
    "keys": {"clinician": "11" * 32, "patient": "22" * 32},
    "stroke_nl": 250,
    "capacity_nl": 20_000_000,
    "catheter_nl": 150_000,
    "link": "uart",
}


class RAMBlockDev:
    """A flash chip in RAM for os.VfsLfs2 (the extended block device protocol)."""

    def __init__(self, block_size=512, blocks=512):
        self.bs = block_size
        self.data = bytearray(block_size * blocks)

    def readblocks(self, n, buf, off=0):
        a = n * self.bs + off
        buf[:] = self.data[a : a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        a = n * self.bs + (off or 0)
        self.data[a : a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.bs
        if op == 5:
            return self.bs
        return 0


class FileBlockDev:
    """The same flash in a host file: keeps the flash out of the MicroPython heap (for
    measuring the firmware's RAM)."""

    def __init__(self, path, block_size=512, blocks=512):
        self.bs = block_size
        self.n = blocks
        blank = bytes(block_size)
        with open(path, "wb") as f:
            for _ in range(blocks):
                f.write(blank)
        self.f = open(path, "r+b")

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        self.f.seek(n * self.bs + (off or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        return 0


FLASH_FILE = None  # a host path: the board's flash lives there instead of in RAM
_mounted = []


def mount(kind="lfs2", path="/lfs"):
    """A fresh filesystem at `path` (the board's flash); returns its root with a slash."""
    while _mounted:
        try:
            os.umount(_mounted.pop())
        except OSError:
            pass
    bdev = FileBlockDev(FLASH_FILE) if FLASH_FILE else RAMBlockDev()
    if kind == "lfs2":
        os.VfsLfs2.mkfs(bdev)
        fs = os.VfsLfs2(bdev)
    else:
        bdev = RAMBlockDev(512, 256)
        os.VfsFat.mkfs(bdev)
        fs = os.VfsFat(bdev)
    os.mount(fs, path)
    _mounted.append(path)
    return path + "/"


def set_battery(w, board, cell_mv):
    """The cell at cell_mv behind the documented divider on the battery ADC pin."""
    top, bottom = DIVIDER_K
    w.adc_pin_mv[WIRING[board]["battery_adc"]] = cell_mv * bottom // (top + bottom)


CPU_WRITE_NS = 0  # a test module may make every CPU pin write cost this much time


def setup(board_mod, name, provision=PROVISION, druglib=True, battery_mv=4100, fs="lfs2",
          device_t=DEVICE_T0, reset_cause=1, cpu_write_ns=None):
    """A new world for board `name` wired as documented; returns it. The board module's
    FS_ROOT points at the new filesystem."""
    global TO_BOARD
    w = fakeworld.reset("rp2" if name == "rp2_pico" else "esp32")
    TO_BOARD = md.EPOCH_UNIX - fakeworld.BOARD_EPOCH
    wire = WIRING[name]
    w.mech = fakeworld.Mechanism(
        w, wire["step"], wire["dir"], wire["enable"], wire["feedback"],
        microsteps_per_rev=MICROSTEPS_PER_REV, edges_per_rev=EDGES_PER_REV,
    )
    w.cpu_write_ns = CPU_WRITE_NS if cpu_write_ns is None else cpu_write_ns
    w.reset_cause = reset_cause
    set_battery(w, name, battery_mv)
    w.set_rtc(device_t + TO_BOARD)
    root = mount(fs)
    if provision is not None:
        with open(root + "provision.json", "w") as f:
            f.write(provision if isinstance(provision, str) else json.dumps(provision))
    if druglib:
        with open("firmware/druglib.json") as src, open(root + "druglib.json", "w") as f:
            f.write(src.read())
    board_mod.FS_ROOT = root
    return w


def strokes_of(w, board):
    """(start_ns, end_ns, pulses) of each ENABLE-active window on the board's driver."""
    wire = WIRING[board]
    en, step = wire["enable"], wire["step"]
    out = []
    cur = None
    en_level = 1
    step_level = 0
    for t, k, n, v in w.log:
        if k != "pin":
            continue
        if n == en:
            if v == 0 and en_level == 1:
                cur = [t, None, 0]
            elif v == 1 and en_level == 0 and cur is not None:
                cur[1] = t
                out.append(tuple(cur))
                cur = None
            en_level = v
        elif n == step:
            if v == 1 and step_level == 0 and cur is not None:
                cur[2] += 1
            step_level = v
    return out


class HostLink:
    """The host's end of the board's UART: authenticated commands in, replies out."""

    def __init__(self, w, board):
        self.w = w
        self.uart_id = WIRING[board]["uart"]
        self.host = Host()
        self.buf = bytearray(4096)
        self.seen = 0

    def send_at(self, t_ns, typ, body=b"", role=md.ROLE_CLINICIAN):
        """Deliver a command when virtual time reaches t_ns (its header time is then)."""
        w = self.w
        key = CLIN_KEY if role == md.ROLE_CLINICIAN else PAT_KEY

        def deliver():
            t = DEVICE_T0 + w.now_ns // 1_000_000_000
            frame = self.host.cmd(typ, body, role=role, key=key, t=t)
            n = cobs_frame_into(frame, len(frame), self.buf)
            w.uarts[self.uart_id].feed(bytes(self.buf[:n]))

        w.at(t_ns, deliver)

    def replies(self):
        """Every reply the board wrote: (cmd_id, cmd_type, result, detail, body).
        Frames are split on the 0x00 delimiter, as a host's deframer does."""
        data = bytes(self.w.uarts[self.uart_id].tx)
        out = []
        for chunk in data.split(b"\x00"):
            if not chunk:
                continue
            b = bytearray(chunk)
            n = cobs_decode_inplace(b, len(b))
            assert n > 0, "undecodable reply bytes"
            out.append(reply(bytes(b[:n])))
        return out
