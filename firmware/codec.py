# Frame codec: frames, CRC-32, COBS, the link deframer, command MACs, .tlog records.
#
# protocol/PROTOCOL.md is the spec; msgdefs.py (generated) has the layouts.
# Hot paths (status, events, telemetry) must not allocate: a board would
# fragment its heap and jitter its stroke timing. So buffers are made once,
# memoryviews of a given length are cached (slicing one allocates), and the
# CRC is computed in viper and stored straight into the buffer, because a
# u32 result as a Python int is a boxed big int on a 32-bit board.
import hashlib
import struct
from array import array

import micropython
from micropython import const

import msgdefs as M

# sizes from the protocol definition (globals: const() cannot take another module's)
_HDR = M.HDR_SIZE
_CRC = M.CRC_SIZE
_MAC = M.MAC_SIZE
_CMD_HEAD = M.CMD_HEAD_SIZE
_MAXF = M.MAX_FRAME
# A COBS encoding adds one byte per 254 and one up front.
_MAX_COBS = _MAXF + _MAXF // 254 + 2
_VIEW_CACHE = const(24)

# --- CRC-32/ISO-HDLC (reflected, poly 0xEDB88320), table-driven ------------------


def _make_table():
    t = array("I", bytes(1024))
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t[i] = c
    return t


_TBL = _make_table()


@micropython.viper
def _crc_put(buf: ptr8, n: int, tbl: ptr32):
    # CRC of buf[0:n] stored little-endian at buf[n:n+4].
    c = uint(0xFFFFFFFF)
    for i in range(n):
        c = uint(tbl[(c ^ buf[i]) & 0xFF]) ^ (c >> 8)
    c = c ^ uint(0xFFFFFFFF)
    buf[n] = c & 0xFF
    buf[n + 1] = (c >> 8) & 0xFF
    buf[n + 2] = (c >> 16) & 0xFF
    buf[n + 3] = (c >> 24) & 0xFF


@micropython.viper
def _crc_ok(buf: ptr8, n: int, tbl: ptr32) -> int:
    # buf[0:n] is data + its CRC: the CRC over all of it is a fixed residue
    # when the stored CRC is right, so no compare of a boxed int is needed.
    c = uint(0xFFFFFFFF)
    for i in range(n):
        c = uint(tbl[(c ^ buf[i]) & 0xFF]) ^ (c >> 8)
    return 1 if c == uint(0xDEBB20E3) else 0


def crc_put(buf, n):
    """Store the CRC-32 of buf[0:n] little-endian at buf[n:n+4] (no allocation)."""
    if n < 0 or n + _CRC > len(buf):
        raise ValueError("crc_put: buffer too small")
    _crc_put(buf, n, _TBL)


def crc_ok(buf, n):
    """True if buf[0:n] ends with the right CRC-32 of buf[0:n-4]."""
    if n < _CRC or n > len(buf):
        return False
    return _crc_ok(buf, n, _TBL) == 1


# --- frames ---------------------------------------------------------------------------


class FrameWriter:
    """A preallocated frame buffer.

    Pack a payload at offset msgdefs.HDR_SIZE (struct.pack_into into `buf`),
    then `finish()` packs the header and CRC and returns a memoryview of the
    frame. The view is reused: it is valid until the next finish().
    """

    def __init__(self, size=_MAXF):
        self.buf = bytearray(size)
        self._mv = memoryview(self.buf)
        self._views = {}
        self._mac = bytearray(32)

    def view(self, n):
        """memoryview of buf[0:n]; cached per length so steady state never allocates."""
        v = self._views.get(n)
        if v is None:
            v = self._mv[:n]
            if len(self._views) < _VIEW_CACHE:
                self._views[n] = v
        return v

    # native: measured 0.69 -> 0.59 us per call on the twin (x64 .mpy), and its frame
    # (15 words) no longer comes from the heap on every call (docs/DESIGN.md)
    @micropython.native
    def finish(self, type, seq, time, payload_len):
        """Header + CRC around the payload already in buf; returns the frame view."""
        n = _HDR + payload_len
        if payload_len < 0 or n + _CRC > len(self.buf):
            raise ValueError("payload too long")
        struct.pack_into(M.HDR_FMT, self.buf, 0, M.VERSION, type, seq & 0xFFFF, time)
        _crc_put(self.buf, n, _TBL)
        return self.view(n + _CRC)

    def finish_signed(self, type, seq, time, payload_len, key):
        """Like finish() for a command: appends the 16-byte MAC (key: MacKey or bytes)
        after payload_len bytes of envelope (cmd_id, role, counter, body)."""
        n = _HDR + payload_len
        if payload_len < _CMD_HEAD or n + _MAC + _CRC > len(self.buf):
            raise ValueError("bad command length")
        struct.pack_into(M.HDR_FMT, self.buf, 0, M.VERSION, type, seq & 0xFFFF, time)
        mac = bytearray(32)
        hmac_sha256_into(key, self._mv[:n], mac)
        self.buf[n : n + _MAC] = memoryview(mac)[:_MAC]
        return self.finish(type, seq, time, payload_len + _MAC)


    def finish_reply(self, type, seq, time, payload_len, key, bind):
        """Like finish() for a REPLY: appends its 16-byte MAC under `key` over the frame
        so far and `bind` (the command's role u8 and counter u32, not on the wire), or
        16 zero bytes when key is None (a NACK the device cannot sign)."""
        n = _HDR + payload_len
        if payload_len < 0 or n + _MAC + _CRC > len(self.buf):
            raise ValueError("payload too long")
        struct.pack_into(M.HDR_FMT, self.buf, 0, M.VERSION, type, seq & 0xFFFF, time)
        mac = self._mac
        if key is None:
            for i in range(_MAC):
                mac[i] = 0
        else:
            hmac_sha256_into(key, self._mv[:n], mac, bind)
        self.buf[n : n + _MAC] = memoryview(mac)[:_MAC]
        return self.finish(type, seq, time, payload_len + _MAC)


def parse_header(mv):
    """(version, type, seq, time) of a frame."""
    return struct.unpack_from(M.HDR_FMT, mv, 0)


def frame_type(mv):
    """The type byte of a frame, without unpacking the rest."""
    return mv[1]


# --- COBS -----------------------------------------------------------------------------


@micropython.viper
def _cobs_enc(src: ptr8, n: int, dst: ptr8) -> int:
    code_i = 0
    o = 1
    code = 1
    i = 0
    while i < n:
        b = src[i]
        if b == 0:
            dst[code_i] = code
            code_i = o
            o += 1
            code = 1
        else:
            dst[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                dst[code_i] = 0xFF
                if i + 1 < n:
                    code_i = o
                    o += 1
                    code = 1
                else:
                    # A full block that ends the input gets no empty block after it.
                    code_i = -1
        i += 1
    if code_i >= 0:
        dst[code_i] = code
    return o


@micropython.viper
def _cobs_dec(buf: ptr8, n: int) -> int:
    # In place: the write index never passes the read index.
    i = 0
    o = 0
    while i < n:
        code = buf[i]
        if code == 0:
            return -1
        i += 1
        end = i + code - 1
        if end > n:
            return -1
        while i < end:
            b = buf[i]
            if b == 0:
                return -1
            buf[o] = b
            o += 1
            i += 1
        if code < 0xFF and i < n:
            buf[o] = 0
            o += 1
    return o


def cobs_max(n):
    """Largest COBS encoding of n bytes (without the 0x00 delimiter)."""
    return n + n // 254 + 1


def cobs_encode_into(src, n, dst):
    """COBS-encode src[0:n] into dst; returns the encoded length (no delimiter).

    Bounds are checked here because the viper loop does not check them.
    """
    if n < 0 or n > len(src) or len(dst) < n + n // 254 + 1:
        raise ValueError("cobs: buffer too small")
    return _cobs_enc(src, n, dst)


def cobs_frame_into(src, n, dst):
    """COBS-encode src[0:n] into dst and add the 0x00 delimiter; returns the length."""
    if n < 0 or n > len(src) or len(dst) < n + n // 254 + 2:
        raise ValueError("cobs: buffer too small")
    m = _cobs_enc(src, n, dst)
    dst[m] = 0
    return m + 1


def cobs_decode_inplace(buf, n):
    """Decode the COBS bytes buf[0:n] in place; returns the decoded length or -1."""
    if n < 0 or n > len(buf):
        raise ValueError("cobs: bad length")
    return _cobs_dec(buf, n)


@micropython.viper
def _collect(src: ptr8, buf: ptr8, st: ptr32) -> int:
    # st: [fill, overflow, pos, end, cap]. Copies src[pos:end] into buf until a
    # 0x00; bytes beyond cap are dropped (overflow set) so garbage cannot grow
    # anything. Returns 1 when a delimiter was consumed.
    fill = st[0]
    over = st[1]
    i = st[2]
    end = st[3]
    cap = st[4]
    while i < end:
        b = src[i]
        i += 1
        if b == 0:
            st[0] = fill
            st[1] = over
            st[2] = i
            return 1
        if fill < cap:
            buf[fill] = b
            fill += 1
        else:
            over = 1
    st[0] = fill
    st[1] = over
    st[2] = i
    return 0


class Deframer:
    """Reassembles COBS frames from link bytes into one preallocated buffer.

    Call `feed(src, pos, end)` until it has consumed what you read; after
    each call `frame` is a memoryview of a good, CRC-checked frame (valid
    until the next feed) or None. Bad input never raises and never grows
    memory; it is counted in `bad_cobs`, `bad_crc`, `short`, `oversize`.
    """

    def __init__(self, max_frame=_MAXF):
        self.cap = max_frame + max_frame // 254 + 1
        self.buf = bytearray(self.cap)
        self._mv = memoryview(self.buf)
        self._st = array("i", [0, 0, 0, 0, self.cap])
        self.frame = None
        self.good = 0
        self.bad_cobs = 0
        self.bad_crc = 0
        self.short = 0
        self.oversize = 0

    def reset(self):
        """Drop a partly received frame (e.g. after a link timeout)."""
        self._st[0] = 0
        self._st[1] = 0

    def feed(self, src, pos, end):
        """Consume src[pos:end] up to and including the next 0x00; returns the new pos."""
        st = self._st
        if end > len(src):
            end = len(src)
        if pos >= end:
            self.frame = None
            return pos
        st[2] = pos
        st[3] = end
        self.frame = None
        if _collect(src, self.buf, st) == 1:
            fill = st[0]
            over = st[1]
            st[0] = 0
            st[1] = 0
            if over:
                self.oversize += 1
            elif fill:  # empty frames (0x00 0x00) are idle fill, not errors
                self._check(fill)
        return st[2]

    def _check(self, fill):
        m = _cobs_dec(self.buf, fill)
        if m < 0:
            self.bad_cobs += 1
        elif m < _HDR + _CRC:
            self.short += 1
        elif _crc_ok(self.buf, m, _TBL) != 1:
            self.bad_crc += 1
        else:
            self.good += 1
            self.frame = self._mv[:m]

    def frames(self, src, n):
        """Generator over the good frames in src[0:n] (each valid until the next)."""
        pos = 0
        while pos < n:
            pos = self.feed(src, pos, n)
            if self.frame is not None:
                yield self.frame

    def errors(self):
        """Total frames rejected so far."""
        return self.bad_cobs + self.bad_crc + self.short + self.oversize


# --- HMAC-SHA256 (no hmac module on MicroPython) --------------------------------------


class MacKey:
    """A key with its HMAC pads computed once."""

    def __init__(self, key):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        self.ipad = bytearray(64)
        self.opad = bytearray(64)
        for i in range(64):
            k = key[i] if i < len(key) else 0
            self.ipad[i] = k ^ 0x36
            self.opad[i] = k ^ 0x5C


def hmac_sha256_into(key, msg, out, extra=None):
    """HMAC-SHA256(key, msg + extra) into out (its first min(len(out), 32) bytes)."""
    mk = key if isinstance(key, MacKey) else MacKey(key)
    # hashlib objects cannot be reset or copied here, so two per MAC.
    h = hashlib.sha256(mk.ipad)
    h.update(msg)
    if extra is not None:
        h.update(extra)
    inner = h.digest()
    h = hashlib.sha256(mk.opad)
    h.update(inner)
    d = h.digest()
    k = len(out) if len(out) < 32 else 32
    for i in range(k):
        out[i] = d[i]
    return out


def verify_mac(key, frame, n):
    """True if frame[0:n] (a whole command frame, CRC included) has the right MAC."""
    end = n - _CRC - _MAC
    if end < _HDR + _CMD_HEAD or n > len(frame):
        return False
    mv = memoryview(frame)
    mac = bytearray(_MAC)
    hmac_sha256_into(key, mv[:end], mac)
    # Compare every byte so the time taken does not tell how much matched.
    diff = 0
    for i in range(_MAC):
        diff |= mac[i] ^ frame[end + i]
    return diff == 0


# --- .tlog ----------------------------------------------------------------------------


@micropython.viper
def _copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
    for i in range(n):
        dst[doff + i] = src[soff + i]


class TlogWriter:
    """Writes a .tlog: the 16-byte header, then 0xA5 | u16 length | frame records.

    Records go through a preallocated buffer written out when full (whole,
    so no partial view is made) and on flush()/close().
    """

    def __init__(self, f, schema=M.SCHEMA, flags=0, bufsize=1024, header=True):
        self.f = f
        self.buf = bytearray(bufsize)
        self._mv = memoryview(self.buf)
        self._head = bytearray(3)
        self.fill = 0
        self.records = 0
        if header:  # False: appending to a log that has one (the twin after a restart)
            f.write(struct.pack(M.TLOG_HDR_FMT, M.TLOG_MAGIC, M.TLOG_FORMAT, flags, schema))

    @micropython.native
    def _put(self, src, n):
        soff = 0
        cap = len(self.buf)
        while n > 0:
            k = cap - self.fill
            if k > n:
                k = n
            _copy(self.buf, self.fill, src, soff, k)
            self.fill += k
            soff += k
            n -= k
            if self.fill == cap:
                self.f.write(self.buf)
                self.fill = 0

    def write_record(self, frame, n=-1):
        """Append one frame (frame[0:n]; n defaults to all of it) as a record."""
        if n < 0:
            n = len(frame)
        if n > len(frame) or n > 0xFFFF:
            raise ValueError("tlog: bad frame length")
        h = self._head
        h[0] = M.TLOG_MARK
        h[1] = n & 0xFF
        h[2] = n >> 8
        self._put(h, 3)
        self._put(frame, n)
        self.records += 1

    def flush(self):
        """Write out buffered records (this one may allocate a view)."""
        if self.fill:
            self.f.write(self._mv[: self.fill])
            self.fill = 0
        if hasattr(self.f, "flush"):
            self.f.flush()

    def close(self):
        """Flush and close the file."""
        self.flush()
        self.f.close()
