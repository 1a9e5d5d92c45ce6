# Frames out: the frame counter, the reused frame buffers, telemetry (STATUS, EVENT,
# DEVICE_INFO) and the REPLY to a command, signed with the command's key and bound to
# its role and counter. Events a command causes are held back until the snapshot that
# carries them is saved (commands.py), then go out in order, before the reply.
import gc
import struct
import sys

import micropython
import msgdefs as md
from codec import FrameWriter
from engine import NEVER
from eventlog import REC_SIZE

FW_VERSION = (0, 1, 0)
HEAP_SAMPLE_S = 86400  # telemetry's heap figures are at most a day old
# the largest telemetry frame: header, DEVICE_INFO (the largest payload), crc
_TX_MAX = md.HDR_SIZE + md.DEVICE_INFO_SIZE + md.CRC_SIZE + 16


def _machine(info):
    # the board as MicroPython names it, as ASCII (DEVICE_INFO's field cuts it at its
    # width, as its description says)
    m = info.get("machine")
    if m is None:
        m = getattr(sys.implementation, "_machine", "")
    return bytes(c if 32 <= c < 127 else 63 for c in m.encode())


class Telemetry:
    """The frames the pump sends; `sink` is the board's telemetry (None: none kept)."""

    def __init__(self, info, sink):
        self.sink = sink
        self.serial = info["serial"]
        self.machine = _machine(info)
        self.tx = FrameWriter(_TX_MAX)  # telemetry frames (status, events, info)
        self.rtx = FrameWriter(md.MAX_FRAME)  # replies
        self.seq = 0  # frame counter (0 after a boot: decoders read that as a restart)
        self.reply_key = None  # the key the next reply is signed with (None: unsigned)
        self.reply_bind = bytearray(md.REPLY_BINDING_SIZE)  # the command's role and counter
        self.hold_from = 0
        self.heap_free = 0
        self.heap_total = 0
        self.heap_t = 0  # when the heap is sampled next
        self.heap_gc_t = 0  # when a sample may collect the garbage next

    def next_seq(self):
        s = self.seq
        self.seq = (s + 1) & 0xFFFF
        return s

    def event(self, events, seq, wall):
        """Send event `seq` of the log as an EVENT frame."""
        if self.sink is None:
            return
        rec = events.record(seq)
        if rec is None:
            return
        buf = self.tx.buf
        buf[md.HDR_SIZE : md.HDR_SIZE + REC_SIZE] = rec
        self.sink.emit(self.tx.finish(md.T_EVENT, self.next_seq(), wall, REC_SIZE))

    def hold(self, events):
        """A command begins: its events stay off flash and off the air until release()
        (after the snapshot that carries them)."""
        self.hold_from = events.next_seq
        events.hold()

    def release(self, events, wall, rep):
        """The command is durable: its events go to flash, then out as telemetry; the
        reply `rep` (in rtx) is numbered after them, as it goes out after them. Returns
        the reply."""
        events.release()
        if self.sink is None or self.hold_from == events.next_seq:
            return rep
        t = wall
        if rep is not None:
            # the reply's frame number goes to the first event, the reply after the last
            _, _, self.seq, t = struct.unpack_from(md.HDR_FMT, rep, 0)
        for seq in range(self.hold_from, events.next_seq):
            self.event(events, seq, wall)
        if rep is None:
            return rep
        n = len(rep) - md.HDR_SIZE - md.MAC_SIZE - md.CRC_SIZE
        return self.rtx.finish_reply(md.T_REPLY, self.next_seq(), t, n, self.reply_key,
                                     self.reply_bind)

    def unsigned(self):
        """Replies from here are unsigned (NACKs before a MAC is checked)."""
        self.reply_key = None

    def sign_with(self, key, role, ctr):
        """Replies from here are signed with `key`, bound to the command's role and
        counter."""
        self.reply_key = key
        struct.pack_into(md.REPLY_BINDING_FMT, self.reply_bind, 0, role, ctr)

    def reply(self, wall, cmd_id, typ, result, detail, body_len):
        """The REPLY frame, its body (body_len bytes) already in place after the head."""
        struct.pack_into(md.REPLY_HEAD_FMT, self.rtx.buf, md.HDR_SIZE, cmd_id, typ, result,
                         detail)
        return self.rtx.finish_reply(md.T_REPLY, self.next_seq(), wall,
                                     md.REPLY_HEAD_SIZE + body_len, self.reply_key,
                                     self.reply_bind)

    def info(self, p, wall):
        if self.sink is not None:
            n = self.info_into(p, self.tx.buf, md.HDR_SIZE)
            self.sink.emit(self.tx.finish(md.T_DEVICE_INFO, self.next_seq(), wall, n))

    def info_into(self, p, buf, off):
        d = p.delivery
        struct.pack_into(
            md.DEVICE_INFO_FMT, buf, off, self.serial, FW_VERSION[0], FW_VERSION[1],
            FW_VERSION[2], md.RUNTIME_MICROPYTHON, md.SCHEMA, d.stroke_nl, d.capacity_nl,
            p.plan.low_nl, d.catheter_nl, d.max_rate_nl_h, d.min_rate_nl_day, self.machine,
        )
        return md.DEVICE_INFO_SIZE

    @micropython.native
    def status_into(self, p, buf, off, now):
        """Pack pump `p`'s STATUS payload; allocation-free (every status period)."""
        flags = 0
        wd = p.wall_delta
        eta = p.low_eta
        if eta:
            eta += wd
            if not 0 < eta < NEVER:
                eta = 0  # no horizon past 2**30 - 1: reads as none
        e = p.engine
        if e.b_next_end != NEVER:
            flags |= md.STATUS_FLAG_BOLUS_RUNNING
        pl = p.plan
        if pl.bridge_nl > 0:
            flags |= md.STATUS_FLAG_BRIDGE
        if pl.mix[0]:
            flags |= md.STATUS_FLAG_ADMIXTURE
        rx = pl.rx
        if rx is not None and rx.flags & md.RX_FLAG_TRIAL:
            flags |= md.STATUS_FLAG_TRIAL
        d = p.delivery
        if d.unprimed_nl > 0:
            flags |= md.STATUS_FLAG_CATHETER_UNPRIMED
        due = p.refill_due
        if due:
            due += wd
            if not 0 < due < NEVER:
                due = 0
            elif p.refill_why == 1:
                flags |= md.STATUS_FLAG_REFILL_DUE_STABILITY
            elif p.refill_why == 2:
                flags |= md.STATUS_FLAG_REFILL_DUE_BATTERY
        if now >= self.heap_t:
            self.sample_heap(now)
        a = p.alarms
        struct.pack_into(
            md.STATUS_FMT, buf, off, p.mode, e.step, flags,
            rx.drug if rx is not None else 0, a.mask, d.reservoir_nl,
            d.delivered_ul, d.delivered_nl, p.battery_days,
            e.rate if p.mode == md.MODE_RUNNING else 0, eta,
            p.rolling.sum(now), pl.conc, p.gate.count_24h(now),
            a.acked & 0xFF, rx.crc if rx is not None else 0, due, self.heap_free,
            self.heap_total,
        )
        return md.STATUS_SIZE

    def status(self, p, now):
        """A complete STATUS frame (memoryview into a reused buffer)."""
        n = self.status_into(p, self.tx.buf, md.HDR_SIZE, now)
        return self.tx.finish(md.T_STATUS, self.next_seq(), now + p.wall_delta, n)

    def sample_heap(self, now):
        """The heap's figures for STATUS (gc.mem_free walks the whole heap: not for every
        frame; telemetry carries a sample at most HEAP_SAMPLE_S old, GET_STATUS a new one).
        The garbage is collected first (at most once a second: a flood of requests cannot
        keep the CPU collecting), so the figure is what the pump really holds, not how
        long ago the last collection ran."""
        if now >= self.heap_gc_t:
            gc.collect()
            self.heap_gc_t = now + 1
        free = gc.mem_free()
        self.heap_free = free
        self.heap_total = free + gc.mem_alloc()
        self.heap_t = now + HEAP_SAMPLE_S
