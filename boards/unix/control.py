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


class _End(Exception):
    """The host ended the run (op "end")."""


async def _run(hw, sh, req, out):
    # true time moves by req["s"] seconds; the watchdog still bites
    from board import WatchdogReset  # the board is loaded: it imported this module

    clock = hw.clock
    end = clock.true_now() + req["s"]
    while clock.true_now() < end and not sh.stop:
        t = clock.true_now() + hw.wdt.timeout_s // 2
        await clock.sleep_until_true(t if t < end else end)
        if hw.wdt.starved():
            raise WatchdogReset()


async def _frame(hw, sh, req, out):
    # one frame to the firmware, answered at the true time it was sent
    link = hw.link
    link.give(unhexlify(req["hex"]))
    while not link.idle():
        # 1 ms, not 0: a task asyncio stamped with the real tick counter (one created at
        # boot) must come due on the virtual one
        await asyncio.sleep_ms(1)
    out["reply"] = link.take().hex()


async def _fault(hw, sh, req, out):
    hw.faults.add(req["kind"], hw.clock.true_now(), req["duration_s"])


async def _fill(hw, sh, req, out):
    out["ok"] = hw.motor.fill(req["nl"], req["conc"])


async def _refill(hw, sh, req, out):
    # a refill visit: empty (what is aspirated comes back), then fill
    import visit

    out["residual"] = visit.refill(hw.motor, req["nl"], req["conc"], req.get("pocket", 0))


async def _catheter(hw, sh, req, out):
    # the surgeon's new catheter (physical only): empty, of nl
    hw.motor.replace_catheter(req["nl"])


async def _cut(hw, sh, req, out):
    from simflash import PowerCut

    raise PowerCut()


async def _end(hw, sh, req, out):
    raise _End()


async def _truth(hw, sh, req, out):
    pass  # every answer carries the truth


# request op -> what it does
_OPS = {"run": _run, "frame": _frame, "fault": _fault, "fill": _fill, "refill": _refill,
        "cut": _cut, "catheter": _catheter,
        "end": _end, "truth": _truth}


async def run(hw, sh):
    """The twin under test control until the host ends it (tests/twinctl.py).

    One JSON request a line on stdin, one answer a line on stdout behind "@@ctl ".
    Between requests the whole twin stands still (a blocking read), so a run is
    deterministic: true time moves only by "run", and every frame is answered at the
    true time it was sent."""
    inp = sys.stdin
    while not sh.stop:
        line = inp.readline()
        if not line:
            return  # the test host went away
        req = json.loads(line)
        op = _OPS.get(req["op"])
        if op is None:
            raise ValueError("control: unknown op " + req["op"])
        out = {}
        try:
            await op(hw, sh, req, out)
        except _End:
            return
        if hw.stream is not None:
            hw.stream.flush()
        out["truth"] = hw.physical()
        out["stopped"] = sh.stop
        sys.stdout.write("@@ctl " + json.dumps(out) + "\n")
