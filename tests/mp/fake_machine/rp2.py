# A fake `rp2` module: asm_pio assembles PIO programs written in the port's syntax,
# and StateMachine runs them instruction by instruction in fakeworld's virtual time at
# the configured clock (one instruction per cycle plus its delay), driving the fake
# pins. FIFOs are 4 words deep; pull/push block as on the chip. Only the instructions
# the boards use are implemented: pull, push, mov, set, jmp, nop (others raise).
import fakeworld


def _w():
    return fakeworld.world


class PIO:
    # ports/rp2/rp2_pio.c
    IN_LOW = 0
    IN_HIGH = 1
    OUT_LOW = 2
    OUT_HIGH = 3
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1
    JOIN_NONE = 0
    JOIN_TX = 1
    JOIN_RX = 2
    IRQ_SM0 = 0x100


class _Instr:
    def __init__(self, op, args):
        self.op = op
        self.args = args
        self.delay = 0

    def __getitem__(self, delay):
        if not 0 <= delay <= 31:
            raise ValueError("PIO delay must be 0..31")
        self.delay = delay
        return self

    def side(self, _v):
        raise NotImplementedError("side-set is not emulated")


class Program:
    def __init__(self, kw):
        self.kw = kw
        self.instrs = []
        self.labels = {}
        self.wrap_target = 0
        self.wrap = None

    def emit(self, op, args):
        if len(self.instrs) >= 32:
            raise ValueError("PIO program longer than 32 instructions")
        i = _Instr(op, args)
        self.instrs.append(i)
        return i


def asm_pio(**kw):
    """Like rp2.asm_pio: runs the program's body with the PIO instruction names as its
    globals (the port swaps the function's globals the same way) and records it."""

    def dec(f):
        prog = Program(kw)

        def label(name):
            prog.labels[name] = len(prog.instrs)

        def wrap_target():
            prog.wrap_target = len(prog.instrs)

        def wrap():
            prog.wrap = len(prog.instrs) - 1

        names = {
            "pins": "pins", "x": "x", "y": "y", "osr": "osr", "isr": "isr", "null": "null",
            "pindirs": "pindirs", "x_dec": "x_dec", "not_x": "not_x", "y_dec": "y_dec",
            "not_y": "not_y", "x_not_y": "x_not_y", "block": "block", "noblock": "noblock",
            "label": label,
            "wrap_target": wrap_target,
            "wrap": wrap,
            "pull": lambda *a: prog.emit("pull", a),
            "push": lambda *a: prog.emit("push", a),
            "mov": lambda d, s: prog.emit("mov", (d, s)),
            "set": lambda d, v: prog.emit("set", (d, v)),
            "jmp": lambda *a: prog.emit("jmp", a),
            "nop": lambda: prog.emit("nop", ()),
        }
        g = f.__globals__
        saved = dict(g)
        g.clear()
        g.update(names)
        try:
            f()
        finally:
            g.clear()
            g.update(saved)
        for i in prog.instrs:
            if i.op == "jmp":
                target = i.args[-1]
                if target not in prog.labels:
                    raise ValueError("unknown label %r" % target)
        if prog.wrap is None:
            prog.wrap = len(prog.instrs) - 1
        return prog

    return dec


_STALL = object()
_JMP_TESTS = {
    "not_x": lambda x, y: x == 0,
    "not_y": lambda x, y: y == 0,
    "x_not_y": lambda x, y: x != y,
}


class StateMachine:
    def __init__(self, sid, prog=None, **kw):
        w = _w()
        # as on the chip there is one state machine per id: a new object takes it over
        for other in w.sms:
            if other.sid == sid:
                other.active(0)
                w.sms.remove(other)
                break
        self.sid = sid
        self.prog = None
        self.running = False
        self.next_t = None
        self.tx = []
        self.rx = []
        self.set_base = None
        self.inits = 0
        w.sms.append(self)
        if prog is not None:
            self.init(prog, **kw)

    def init(self, prog, freq=125_000_000, *, set_base=None, **kw):
        if not 1908 <= freq <= 125_000_000:
            raise ValueError("freq out of range")
        self.active(0)
        self.prog = prog
        self.freq = freq
        self.pc = 0
        self.x = self.y = self.osr = self.isr = 0
        self.tx = []
        self.rx = []
        self.inits += 1
        self.set_base = set_base.id if set_base is not None else None
        si = prog.kw.get("set_init")
        if self.set_base is not None and si is not None:
            w = _w()
            p = w.pin(self.set_base)
            p.mode = "out"
            w.write(self.set_base, 1 if si == PIO.OUT_HIGH else 0, "pio")

    def active(self, v=None):
        if v is None:
            return 1 if self.running else 0
        w = _w()
        if v and not self.running:
            self.running = True
            self.t0 = w.now_ns
            self.cycles = 0
            self.next_t = w.now_ns
        elif not v:
            self.running = False
            self.next_t = None

    def _t(self, cycles):
        return self.t0 + cycles * 1_000_000_000 // self.freq

    def _wake(self):
        # a stalled machine goes on at its next clock edge
        if self.running and self.next_t is None:
            w = _w()
            c = ((w.now_ns - self.t0) * self.freq + 999_999_999) // 1_000_000_000
            if c < self.cycles:
                c = self.cycles
            self.cycles = c
            self.next_t = self._t(c)

    def put(self, v):
        w = _w()
        while len(self.tx) >= 4:
            if not self.running:
                raise RuntimeError("put() on a full FIFO of a stopped state machine blocks forever")
            w.advance_to(w.next_event_t())
        self.tx.append(v & 0xFFFFFFFF)
        self._wake()

    def get(self):
        w = _w()
        while not self.rx:
            if not self.running:
                raise RuntimeError("get() on an empty FIFO of a stopped state machine blocks forever")
            w.advance_to(w.next_event_t())
        v = self.rx.pop(0)
        self._wake()
        return v

    def rx_fifo(self):
        return len(self.rx)

    def tx_fifo(self):
        return len(self.tx)

    def restart(self):
        self.x = self.y = self.osr = self.isr = 0

    _REGS = ("x", "y", "isr", "osr")

    def _src(self, s):
        if s in self._REGS:
            return getattr(self, s)
        if s == "null":
            return 0
        raise NotImplementedError("mov source " + s)

    # One method per instruction: each returns the pc to jump to, None to go on, or
    # _STALL when the state machine waits (an empty TX FIFO, a full RX FIFO).
    def _pull(self, a):
        if self.tx:
            self.osr = self.tx.pop(0)
        elif "noblock" in a:
            self.osr = self.x
        else:
            return _STALL  # until put()
        return None

    def _push(self, a):
        if len(self.rx) < 4:
            self.rx.append(self.isr)
            self.isr = 0
        elif "noblock" not in a:
            return _STALL
        return None

    def _mov(self, a):
        if a[0] not in self._REGS:
            raise NotImplementedError("mov destination " + a[0])
        setattr(self, a[0], self._src(a[1]))
        return None

    def _set(self, a):
        d, v = a
        if d == "pins":
            if self.set_base is None:
                raise RuntimeError("set(pins) without set_base")
            _w().write(self.set_base, v & 1, "pio")
        elif d in ("x", "y"):
            setattr(self, d, v)
        else:
            raise NotImplementedError("set destination " + d)
        return None

    def _jmp(self, a):
        cond = a[0] if len(a) == 2 else None
        if cond is None:
            take = True
        elif cond in ("x_dec", "y_dec"):
            r = cond[0]
            v = getattr(self, r)
            take = v != 0
            setattr(self, r, (v - 1) & 0xFFFFFFFF)
        elif cond in _JMP_TESTS:
            take = _JMP_TESTS[cond](self.x, self.y)
        else:
            raise NotImplementedError("jmp condition " + cond)
        return self.prog.labels[a[-1]] if take else None

    def _nop(self, a):
        return None

    def step(self):
        """Execute the instruction at pc, at time next_t."""
        ins = self.prog.instrs[self.pc]
        do = _OPS.get(ins.op)
        if do is None:
            raise NotImplementedError(ins.op)
        jump = do(self, ins.args)
        if jump is _STALL:
            self.next_t = None
            return
        self.cycles += 1 + ins.delay
        if jump is not None:
            self.pc = jump
        elif self.pc == self.prog.wrap:
            self.pc = self.prog.wrap_target
        else:
            self.pc += 1
        self.next_t = self._t(self.cycles)


def bootsel_button():
    return _w().bootsel


_OPS = {
    "pull": StateMachine._pull,
    "push": StateMachine._push,
    "mov": StateMachine._mov,
    "set": StateMachine._set,
    "jmp": StateMachine._jmp,
    "nop": StateMachine._nop,
}
