# Delivery: the mechanism's volumes. What is in the reservoir, what the pump has pushed
# since therapy started, the drug each stroke carries (exactly, in 1e-6 ng) and the
# catheter that drug must fill before it reaches the patient. Everything here changes
# through its methods; the pump decides when a stroke happens, this part counts it.
import micropython
from engine import NEVER
from part import Part

_UNG = 1_000_000  # 1e-6 ng per ng
_DAY = 86400


class Delivery(Part):
    """The reservoir, the delivered total and the catheter, in nL (ints, < 2**30)."""

    # snapshot fields this part owns (protocol/theca_protocol/storage.py SnapshotHead)
    SNAP = ("reservoir_nl", "delivered_ul", "delivered_nl", "ng_frac", "catheter_nl",
            "unprimed_nl", "exempt_nl", "exempt_t")

    def __init__(self, info):
        self.stroke_nl = info["stroke_nl"]
        self.capacity_nl = info["capacity_nl"]
        self.max_rate_nl_h = info["max_rate_nl_h"]
        self.min_rate_nl_day = info["min_rate_nl_day"]
        self.reservoir_nl = info.get("reservoir_nl", 0)
        self.delivered_ul = 0
        self.delivered_nl = 0  # 0..999, the nL beyond delivered_ul
        self.catheter_nl = info["catheter_nl"]  # CATHETER sets it
        self.unprimed_nl = 0  # catheter volume not yet pushed since the last CATHETER
        # of it, what is exempt from the dose limits (SR-CATH-02: one change in 24 h is; the
        # pump cannot know whether a catheter is really new) and when that change was
        self.exempt_nl = 0
        self.exempt_t = 0
        # drug per stroke = ng_q + ng_r / 1e6 ng, carried exactly in ng_frac
        self.ng_q = 0
        self.ng_r = 0
        self.ng_frac = 0
        self.retry_t = NEVER  # a stalled motor is tried again then (strokes.probe)

    def retry_at(self, t):
        """The stalled motor is tried again at t (NEVER: not)."""
        self.retry_t = t

    def set_conc(self, conc):
        """The concentration now leaving the catheter (ng/mL): the drug per stroke."""
        self.ng_q, self.ng_r = divmod(self.stroke_nl * conc, _UNG)

    def fill(self, volume_nl):
        """The reservoir was emptied and filled with volume_nl."""
        self.reservoir_nl = volume_nl

    def new_catheter(self, volume_nl, now):
        """A new, empty catheter of volume_nl: unprimed until that much is pushed. Its
        filling is exempt from the dose limits only if no change was exempt in the 24 h
        before (SR-CATH-02): a repeated CATHETER (a mistake, or a hostile key, with the old
        catheter still full) pushes drug that counts like any other."""
        self.catheter_nl = volume_nl
        self.unprimed_nl = volume_nl
        if self.exempt_t and now - self.exempt_t < _DAY:
            self.exempt_nl = 0
        else:
            self.exempt_nl = volume_nl
            self.exempt_t = now if now else 1

    def held_nl(self):
        """What the catheter holds of the fill before the one now going in."""
        return self.catheter_nl - self.unprimed_nl

    @micropython.native
    def move(self, motor, store, now, acc, q, mode, window_ng):
        """The motor's stroke, journaled ahead (write-ahead: a cut can only make the pump
        believe it delivered a stroke it did not): the accounting as it will be, with the
        engine's accumulator after it (acc - q) and the rolling window's drug with it
        (window_ng, the dose history's witness); if nothing moved, the journal says so
        again at once. 0, or the mechanism's fault; a journal the flash does not take
        raises OSError before the motor moves. (Native: its frame would be a heap block
        per stroke, SR-HEAP-01.)"""
        s = self.stroke_nl
        if store is not None:
            nl = self.delivered_nl + s
            ul = self.delivered_ul
            while nl >= 1000:
                nl -= 1000
                ul += 1
            store.journal(now, self.reservoir_nl - s, ul, nl, acc - q, mode, window_ng)
        r = motor.stroke()
        if r != 0 and store is not None:
            store.journal(now, self.reservoir_nl, self.delivered_ul, self.delivered_nl, acc,
                          mode, window_ng)
        return r

    def account(self):
        """A confirmed stroke: the reservoir and the delivered total move on. Returns
        the drug (ng) that reached the patient with it: none of what fills a new
        catheter (SR-CATH-01), the part that does rounded up."""
        s = self.stroke_nl
        self.reservoir_nl -= s
        nl = self.delivered_nl + s
        while nl >= 1000:
            nl -= 1000
            self.delivered_ul += 1
        self.delivered_nl = nl
        ng = self.ng_q
        f = self.ng_frac + self.ng_r
        if f >= _UNG:
            f -= _UNG
            ng += 1
        self.ng_frac = f
        u = self.unprimed_nl
        if u > 0:
            return self._filling(s, ng, u)
        return ng

    def _filling(self, s, ng, u):
        # The stroke fills the new catheter (u < s: only part of it does): what fills it
        # reaches no one, and the exempt part of that is not counted (SR-CATH-01, -02); the
        # rest is, rounded up.
        take = s if u >= s else u
        self.unprimed_nl = u - take
        e = self.exempt_nl
        ex = take if e >= take else e
        self.exempt_nl = e - ex
        if ex >= s:
            return 0
        return (ng * (s - ex) + s - 1) // s

    def assume_pushed(self, nl):
        """After a restart with a record lost (SR-STO-02): nl that may have been pushed is
        counted as pushed, so the reservoir is never over-estimated (never below 0)."""
        r = self.reservoir_nl - nl
        self.take_up_journal(r if r > 0 else 0, self.delivered_ul + (self.delivered_nl + nl) // 1000,
                             (self.delivered_nl + nl) % 1000)

    def forget_catheter(self, now):
        """After a restart with the state lost: nothing of the catheter is exempt, and no
        change in the next 24 h is either (what was done to it is not known)."""
        self.unprimed_nl = 0
        self.exempt_nl = 0
        self.exempt_t = now if now else 1

    def take_up_journal(self, reservoir_nl, delivered_ul, delivered_nl):
        """After a restart: strokes the journal recorded after the snapshot. Returns
        the nL they pushed (they also filled the catheter that much: a volume is never
        exempt twice)."""
        extra = (delivered_ul - self.delivered_ul) * 1000 + (delivered_nl - self.delivered_nl)
        if extra > 0:
            u = self.unprimed_nl
            self.unprimed_nl = u - extra if u > extra else 0
            e = self.exempt_nl
            self.exempt_nl = e - extra if e > extra else 0
        self.reservoir_nl = reservoir_nl
        self.delivered_ul = delivered_ul
        self.delivered_nl = delivered_nl
        return extra
