# The twin's control channel, for tests only (tests/twinctl.py): the link a test host
# gives frames to, and the loop that runs the twin step by step at its requests. Only
# a twin in control mode imports it.
import asyncio
import json
import sys
from binascii import unhexlify


class ControlLink:
    """The control channel's link: a frame given by the test host is read by the
    firmware's link task at once; its reply is kept for the host."""

    def __init__(self):
        self.data = None
        self.pos = 0
        self.waiting = False
        self.ev = asyncio.Event()
        self.out = bytearray()

    def give(self, data):
        self.data = data
        self.pos = 0
        self.waiting = False
        self.ev.set()

    def idle(self):
        """The frame was read whole and the link task waits for the next one."""
        return self.data is None and self.waiting

    def take(self):
        r = bytes(self.out)
        self.out = bytearray()
        return r

    async def readinto(self, buf):
        while self.data is None:
            self.waiting = True
            self.ev.clear()
            await self.ev.wait()
        n = min(len(buf), len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        if self.pos >= len(self.data):
            self.data = None
        return n

    def write(self, mv):
        self.out += mv


async def run(hw, sh):
    """The twin under test control until the host ends it (tests/twinctl.py)."""
    from board import WatchdogReset  # the board is loaded: it imported this module

    # The test-only control channel (tests/twinctl.py): one JSON request a line on
    # stdin, one answer a line on stdout behind "@@ctl ". Between requests the whole
    # twin stands still (a blocking read), so a run is deterministic: true time moves
    # only by "run", and every frame is answered at the true time it was sent.
    clock = hw.clock
    link = hw.link
    inp = sys.stdin
    while not sh.stop:
        line = inp.readline()
        if not line:
            return  # the test host went away
        req = json.loads(line)
        op = req["op"]
        out = {}
        if op == "run":
            end = clock.true_now() + req["s"]
            while clock.true_now() < end and not sh.stop:
                t = clock.true_now() + hw.wdt.timeout_s // 2
                await clock.sleep_until_true(t if t < end else end)
                if hw.wdt.starved():
                    raise WatchdogReset()
        elif op == "frame":
            link.give(unhexlify(req["hex"]))
            while not link.idle():
                # 1 ms, not 0: a task asyncio stamped with the real tick counter (one
                # created at boot) must come due on the virtual one
                await asyncio.sleep_ms(1)
            out["reply"] = link.take().hex()
        elif op == "fault":
            hw.faults.add(req["kind"], clock.true_now(), req["duration_s"])
        elif op == "fill":
            out["ok"] = hw.motor.fill(req["nl"], req["conc"])
        elif op == "cut":
            from simflash import PowerCut

            raise PowerCut()
        elif op == "end":
            return
        elif op != "truth":
            raise ValueError("control: unknown op " + op)
        if hw.stream is not None:
            hw.stream.flush()
        out["truth"] = hw.physical()
        out["stopped"] = sh.stop
        sys.stdout.write("@@ctl " + json.dumps(out) + "\n")

