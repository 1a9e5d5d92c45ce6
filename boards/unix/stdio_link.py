# The live twin's link (`theca twin`) or a flashed unix REPL's: this process's stdin and
# stdout, which the host puts on a pseudo-terminal. Only those modes import it.
import asyncio
import sys


class StdioLink:
    """Live twin or a flashed unix REPL: the link is this process's stdin/stdout, which
    the host puts on a pseudo-terminal (a USB-serial board's single port)."""

    # MicroPython's stream read()/readinto() loop until the whole buffer is filled on a
    # blocking file, so a 256-byte read would sit on a 40-byte command. Two ways out:
    # - nonblocking: `theca twin` sets O_NONBLOCK on the pty master it hands us (the
    #   flag belongs to the open file, so it is ours too): a read returns what has come.
    # - otherwise (a flashed unix REPL behind socat, a pipe): poll, then read one byte at
    #   a time while more is waiting. Slower, but correct on any file.

    def __init__(self, nonblocking=False):
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.reader = asyncio.StreamReader(self.inp)
        self.nonblocking = nonblocking
        self.dropped = 0  # bytes of replies the host never took (its side was full)
        self.torn = False  # the last reply was cut short: the next begins with 0x00
        if not nonblocking:
            import select

            self.poller = select.poll()
            self.poller.register(self.inp, select.POLLIN)
            self.one = bytearray(1)

    async def readinto(self, buf):
        """Wait for link bytes; returns how many (never 0: a quiet link is not closed)."""
        while True:
            try:
                if self.nonblocking:
                    n = await self.reader.readinto(buf)
                else:
                    n = await self._bytewise(buf)
            except OSError:
                # EIO: nobody holds the other end of the pty right now. The pump goes
                # on; the link is tried again, as a board's USB port would be.
                n = 0
            if n:
                return n
            await asyncio.sleep_ms(20)  # spurious wake-up or hang-up: do not spin

    async def _bytewise(self, buf):
        if await self.reader.readinto(self.one) != 1:  # waits for the first byte
            return 0
        buf[0] = self.one[0]
        n = 1
        cap = len(buf)
        while n < cap and self.poller.poll(0):
            if self.inp.readinto(self.one) != 1:
                break
            buf[n] = self.one[0]
            n += 1
        return n

    def write(self, mv):
        """Send a reply. On the non-blocking pty a full buffer (a host that stopped
        reading) must not stall therapy: what does not fit is dropped at once, never
        waited for (a wait blocks the whole loop, and at --speed 60 each millisecond is
        60 of the pump's: a host that stopped reading starved therapy, issue 13). After a
        torn reply the next one starts with 0x00, so the host loses only the torn one."""
        if self.torn:
            try:
                if not self.out.write(b"\x00"):
                    self.dropped += len(mv)
                    return
            except OSError:
                self.dropped += len(mv)
                return
            self.torn = False
        n = len(mv)
        off = 0
        while off < n:
            try:
                k = self.out.write(mv[off:] if off else mv)
            except OSError:
                k = None
            if not k:
                self.dropped += n - off
                self.torn = off > 0
                return
            off += k
