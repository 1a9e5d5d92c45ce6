# The twin's pump mechanism: the reservoir and the catheter as they really are (its
# physical truth, apart from the firmware's belief), the drug at the catheter tip, the
# refills and catheters a scenario's visits bring, and the strokes a fault stops.
import struct

import micropython
import msgdefs as md


class Mechanism:
    """The pump mechanism, its physical reservoir and the catheter: the truth the firmware
    believes. Nothing here is the firmware's: it is the world the firmware acts on.

    Drug is tracked as mass in units of 1e-6 ng (nL x ng/mL), so every stroke's drug is
    exact up to a floor division inside one fill: the reservoir mixes what a refill adds,
    and the catheter is a first-in first-out column of such fills, so the drug that
    reaches the tip lags the drug that leaves the pump by the catheter volume.

    Refills are physical too: the drug a clinician injects through the septum at a
    scenario's refill time (if it fits), whatever the firmware makes of the command.
    `stream`, if given, is a file that gets one record per stroke (true time u32,
    nL u32, drug at the tip i64 in 1e-6 ng): the truth outside the firmware's heap.
    """

    def __init__(self, stroke_nl, reservoir_nl, faults, capacity_nl=md.DEFAULT_CAPACITY_NL, refills=(),
                 conc=0, catheter_nl=0, stream=None, catheters=(), drug=0, tip_stream=None):
        self.stroke_nl = stroke_nl
        self.reservoir_nl = reservoir_nl
        self.mass = reservoir_nl * conc  # drug in the reservoir, 1e-6 ng
        self.drug = drug  # which drug that is (a refill empties the reservoir first)
        self.capacity_nl = capacity_nl
        self.refills = sorted(refills)
        self.last_visit = (None, None)  # (true time, nL aspirated) of the last refill visit
        self.catheters = sorted(catheters)  # [true time, nL]: a new, empty catheter
        self.pumped_nl = 0
        self.left_mass = 0  # drug that left the pump
        self.tip_mass = 0  # drug that left the catheter tip (reached the patient)
        self.strokes = 0
        self.failed = 0
        self.pocket_nl = 0  # drug injected beside the pump (pocket fills)
        # what refill visits put in and took out (the volume's balance: `theca campaign`)
        self.filled_nl = 0
        self.aspirated_nl = 0
        self.faults = faults
        self.running = False
        # the catheter, primed with the first fill: [[nL, mass, drug], ...], oldest first
        self.catheter = [[catheter_nl, catheter_nl * conc, drug]] if catheter_nl else []
        self.stream = stream
        self.rec = bytearray(md.TRUTH_SIZE)
        self.tip_stream = tip_stream  # per drug at the tip (TRUTH_TIP records), if asked
        self.tip_rec = bytearray(md.TRUTH_TIP_SIZE)

    def _refill(self, before=None):
        # the scenario's refills due now (or, with `before`, those before that time)
        now = self.faults.clock.true_now()
        while self.refills and (self.refills[0][0] < before if before is not None
                                else self.refills[0][0] <= now):
            r = self.refills.pop(0)
            import visit  # only a twin with refills pays for it

            # what was aspirated, kept by time: the REFILL command reports it even if a
            # stroke at the same instant (a CHALLENGE before it) made the visit first
            self.last_visit = (r[0], visit.refill(self, r[1], r[2], r[3] if len(r) > 3 else 0))
            if self.last_visit[1] is not None and len(r) > 4:
                self.drug = r[4]

    def _new_catheter(self):
        # a catheter revision due now: the old catheter and what it held are gone, the
        # new one holds no drug (CSF) until the pump has pushed its volume
        now = self.faults.clock.true_now()
        while self.catheters and self.catheters[0][0] <= now:
            self.replace_catheter(self.catheters.pop(0)[1])

    def replace_catheter(self, nl):
        """A revision now: the old catheter and what it held are gone; the new one, of nl,
        holds no drug (CSF, drug 0) until the pump has pushed its volume."""
        self.catheter = [[nl, 0, 0]]

    def fill(self, nl, conc):
        """The clinician injects nl of conc through the septum without emptying (refused
        if it overfills)."""
        if self.reservoir_nl + nl <= self.capacity_nl:
            self.reservoir_nl += nl
            self.mass += nl * conc
            self.filled_nl += nl
            return True
        return False

    def stroke(self):
        if self.refills:
            self._refill()
        if self.catheters:
            self._new_catheter()
        if self.faults.stalled():
            self.failed += 1
            return 1
        if self.faults.occluded():
            self.failed += 1
            return 2
        v = self.stroke_nl
        if self.reservoir_nl >= v:
            m = self.mass * v // self.reservoir_nl
            self.reservoir_nl -= v
            self.mass -= m
            self.pumped_nl += v
            self.left_mass += m
            self._push(v, m)
        self.strokes += 1
        return 0

    @micropython.native
    def _push(self, v, m):
        # v nL of drug m enter the catheter; as much leaves its tip (of at most two
        # fills: `tip` of the first one's drug d1, `tip2` of the next one's, d2)
        cat = self.catheter
        drug = self.drug
        d1 = drug
        d2 = 0
        tip2 = 0
        if not cat:
            tip = m  # no catheter modelled: the pump's outlet is the tip
        else:
            tail = cat[-1]
            if tail[2] == drug and tail[1] * v == m * tail[0]:
                tail[0] += v  # the same fill: one column
                tail[1] += m
            else:
                cat.append([v, m, drug])
            tip = 0
            d1 = cat[0][2]
            need = v
            while need:
                head = cat[0]
                if head[0] <= need:
                    need -= head[0]
                    out = head[1]
                    cat.pop(0)
                else:
                    out = head[1] * need // head[0]
                    head[0] -= need
                    head[1] -= out
                    need = 0
                if head[2] == d1:
                    tip += out
                else:
                    d2 = head[2]
                    tip2 += out
        self.tip_mass += tip + tip2
        now = self.faults.clock.true_now()
        if self.stream is not None:
            struct.pack_into(md.TRUTH_FMT, self.rec, 0, now, v, tip + tip2)
            self.stream.write(self.rec)
        if self.tip_stream is not None:
            self._tip_parts(now, d1, tip, d2, tip2)

    def _tip_parts(self, now, d1, tip, d2, tip2):
        r = self.tip_rec
        struct.pack_into(md.TRUTH_TIP_FMT, r, 0, now, d1, 0, tip)
        self.tip_stream.write(r)
        if tip2:
            struct.pack_into(md.TRUTH_TIP_FMT, r, 0, now, d2, 0, tip2)
            self.tip_stream.write(r)

    def resume(self, phys, start):
        """The world after a restart of the twin, as `physical()` left it."""
        self.reservoir_nl = phys["reservoir_nl"]
        self.pumped_nl = phys["pumped_nl"]
        self.strokes = phys["strokes"]
        self.failed = phys["failed_strokes"]
        self.refills = [r for r in self.refills if r[0] > start]
        self.catheters = [c for c in self.catheters if c[0] > start]
        self.pocket_nl = phys.get("pocket_nl", 0)
        self.filled_nl = phys.get("filled_nl", 0)
        self.aspirated_nl = phys.get("aspirated_nl", 0)
        if "mass" in phys:
            self.mass = phys["mass"]
            self.left_mass = phys["left_mass"]
            self.tip_mass = phys["tip_mass"]
            self.catheter = phys["catheter"]
            self.drug = phys.get("drug", self.drug)

    def off(self):
        self.running = False
