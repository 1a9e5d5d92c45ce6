# The plan: what is in the reservoir (drug, concentration, when it went in), the
# prescription in force, the low-reservoir threshold it sets, and the bridge: after a
# refill the catheter still holds the old fill, which reaches the patient first (the old
# concentration at the dose per day kept, or for another drug the old prescription's
# volume rate). The pump asks this part which drug and concentration leave the catheter
# and which prescription's volume rate runs; it changes it only through these methods.
import rx as rxmod
from part import Part


class Plan(Part):
    """The fill, the prescription and the bridge between one fill and the next."""

    # snapshot fields this part owns (protocol/theca_protocol/storage.py SnapshotHead);
    # the prescriptions' blobs follow the head (blobs(), take_up_rx())
    SNAP = ("conc", "drug", "bridge_drug", "bridge_nl", "bridge_conc", "fill_t",
            "fill_first", "mix", "bridge_mix")

    def __init__(self, board_low_nl):
        self.rx = None
        self.conc = 0  # ng/mL of what is in the reservoir (0: unknown until programmed)
        self.drug = 0  # the drug in the reservoir (0: unknown until programmed or filled)
        self.mix = rxmod.NO_MIX  # the fill's other drugs (an admixture: mix.py)
        self.board_low_nl = board_low_nl
        self.low_nl = board_low_nl  # the prescription's, while one says so
        # a refill with a new concentration: the catheter still holds the old one
        self.bridge_nl = 0
        self.bridge_conc = 0
        # a refill with another drug: the catheter still holds the old one, delivered by
        # the old prescription's volume rate (bridge_rx) until it is pushed out
        self.bridge_drug = 0
        self.bridge_mix = rxmod.NO_MIX
        self.bridge_rx = None
        self.fill_t = 0  # when the fill in the reservoir went in (0: not known)
        self.fill_first = 0  # 1: the reservoir's first fill of its drug
        self.rx_bad = False  # a stored prescription did not parse

    # -- what leaves the catheter ------------------------------------------------------
    def drug_conc(self):
        """The concentration now reaching the patient: during a bridge, the old one."""
        return self.bridge_conc if self.bridge_nl > 0 else self.conc

    def plan_rx(self):
        """The prescription whose volume rate runs: during a drug change's bridge the old
        drug's, whatever was programmed for the new one since; when the old drug had none
        (never programmed, or stopped), the new one's, judged by the old drug's limits
        while the old drug leaves the catheter (guard_cap)."""
        if self.bridge_drug and self.bridge_rx is not None:
            return self.bridge_rx
        return self.rx

    def tip_limits(self, lib):
        """The hard limits of what now leaves the catheter, in ng of its primary drug
        (an admixture: each the smallest that keeps every drug within its own); None if
        a drug of it is not in the library `lib`."""
        mix = self.bridge_mix if self.bridge_drug else self.mix
        d = lib.get(self.tip_drug())
        if d is None or not mix[0]:
            return d
        import mix as mixmod

        if mixmod.check(mix, self.tip_drug(), lib) is not None:
            return None
        return mixmod.limits(d, self.drug_conc(), mix, lib)

    def other_fill(self, drug, conc, mix):
        """True if a fill of drug at conc with `mix` is another than the reservoir's: another
        primary drug, other drugs beside it, or an admixture in other proportions (any
        change of an admixture is a change of drug: its prescription must be its own)."""
        return bool(self.drug) and (drug != self.drug or mix != self.mix
                                    or (mix[0] and conc != self.conc))

    def tip_drug(self):
        """The drug now leaving the catheter."""
        if self.bridge_drug:
            return self.bridge_drug
        return self.rx.drug if self.rx is not None else self.drug

    def guard_cap(self):
        """A drug change whose old drug had no prescription: the new plan pushes at most
        the catheter's old fill of the old drug (by its limits) before its own."""
        return self.bridge_nl if self.bridge_drug and self.bridge_rx is None else 0

    def volume_plan(self):
        """(step starts, step rates nL/day, timed (start, duration, nL)) of the plan in
        force at the concentration now leaving the catheter."""
        rx = self.plan_rx()
        conc = self.drug_conc()
        if self.bridge_drug and self.bridge_rx is None:
            conc = rx.conc_ng_ml  # the new drug's plan, in its own volume
        rates = [rxmod.ng_to_nl(r, conc) for r in rx.step_rate_ng_day]
        timed = []
        for i in range(len(rx.timed_start_s)):
            timed.append((rx.timed_start_s[i], rx.timed_duration_s[i],
                          rxmod.ng_to_nl(rx.timed_dose_ng[i], conc)))
        return rx.step_start_s, rates, timed

    def pb_dose_nl(self):
        """The patient bolus the prescription allows, nL (0: none configured)."""
        rx = self.rx
        if rx is None or not rx.pb_max_per_day or not self.conc:
            return 0
        return rxmod.ng_to_nl(rx.pb_dose_ng, self.conc)

    # -- changes -------------------------------------------------------------------------
    def try_rx(self, rx):
        """Put prescription `rx` in force (its concentration is the reservoir's); returns
        what put_back() needs if the dose guard refuses it."""
        old = (self.rx, self.conc)
        self.rx = rx
        self.conc = rx.conc_ng_ml
        return old

    def put_back(self, old):
        self.rx, self.conc = old

    def drop_rx(self):
        """No prescription in force (a damaged one, or the bridge to another drug ended
        with none for it)."""
        self.rx = None

    def learn_drug(self, drug, mix, now):
        """A prescription for `drug` was accepted. A new pump learns its reservoir's drug
        from its first prescription: that fill is its first of the drug (the label's
        first-fill stability)."""
        if not self.drug:
            self.fill_t = now if now else 1
            self.fill_first = 1
        self.drug = drug
        self.mix = mix

    def take_up_fill(self, drug, conc, mix):
        """After a restart with the state lost: the fill the event log last recorded."""
        self.drug = drug
        self.conc = conc
        self.mix = mix

    def refill(self, now, drug, conc, mix, held_nl):
        """The reservoir was emptied and filled with drug at conc; the catheter holds
        held_nl of the fill before. Returns True if the bridge must end at once: nothing
        of the old fill is in the catheter (none, or a new one not yet filled), so the new
        fill reaches the tip with the next stroke."""
        self.fill_first = 1 if drug != self.drug else 0
        self.fill_t = now if now else 1
        other = self.other_fill(drug, conc, mix)
        old_drug, old_conc, old_mix = self.drug, self.conc, self.mix
        self._start_bridge(other, conc, held_nl)
        self.conc = conc
        self.drug = drug
        self.mix = mix
        if self.bridge_nl <= 0 and (other or old_conc and conc != old_conc):
            # the same drug: its volume plan is made at once (the dose per day kept); another
            # drug needs its own prescription: the old one at the new drug's concentration
            # would be the wrong drug at the wrong rate (found by the stateful test:
            # morphine's 10.8 mg/day run as 432 mL/day of ziconotide)
            if other:
                self.bridge_drug = old_drug
                self.bridge_mix = old_mix
                self.bridge_conc = old_conc
            return True
        return False

    def _start_bridge(self, other, conc, held):
        if held <= 0:
            return
        if other:
            # another drug: the old prescription's volume rate pushes the old drug out (with
            # no old prescription, the new one's, limited by the old drug's limits)
            if not self.bridge_drug:
                self.bridge_drug = self.drug
                self.bridge_mix = self.mix
                self.bridge_rx = self.rx
                self.bridge_conc = self.conc if self.bridge_nl <= 0 else self.bridge_conc
            self.bridge_nl = held
        elif self.conc and conc != self.conc and not self.bridge_drug:
            # the same drug, another concentration: the drug per day is kept
            if self.bridge_nl <= 0:
                self.bridge_conc = self.conc
            self.bridge_nl = held

    def bridging(self):
        return self.bridge_nl > 0 or self.bridge_drug

    def pushed(self, s):
        """A stroke of s nL left the catheter; True if it ended the bridge."""
        if self.bridge_nl > 0:
            self.bridge_nl -= s
            return self.bridge_nl <= 0
        return False

    def end_bridge(self):
        """The old fill is out of the catheter (pushed, or gone with a new catheter).
        Returns 0: the same drug; 1: another drug reaches the tip with its prescription;
        2: another drug with none (the prescription is dropped)."""
        self.bridge_nl = 0
        self.bridge_conc = 0
        if not self.bridge_drug:
            return 0
        self.bridge_drug = 0
        self.bridge_mix = rxmod.NO_MIX
        self.bridge_rx = None
        if self.rx is None or self.rx.drug != self.drug or self.rx.mix != self.mix:
            self.rx = None
            return 2
        return 1

    def carry(self):
        """(num, den) for the dose history when the bridge ends (ask before end_bridge):
        between fills of one primary drug it is kept scaled by num/den >= 1 (drug k's true
        history is h * old_ck / old_c0, the new fill counts h * new_ck / new_c0: by the
        largest ratio of the two, no drug is under-counted); (0, 1): no bridge of another
        fill, or another primary drug, whose history starts anew."""
        if (not self.bridge_drug or self.bridge_drug != self.drug or not self.bridge_conc
                or not self.conc):
            return (0, 1)
        if not self.mix[0] or not self.bridge_mix[0]:
            return (1, 1)  # (one drug's history is exact; a drug new to the fill has none)
        import mix as mixmod

        return mixmod.carry(self.bridge_conc, self.bridge_mix, self.conc, self.mix)

    def threshold(self):
        """The low-reservoir threshold of the prescription in force (the board's without
        one). True if it moved."""
        old = self.low_nl
        rx = self.rx
        self.low_nl = rx.low_nl if rx is not None and rx.low_nl else self.board_low_nl
        return self.low_nl != old

    # -- persistence ---------------------------------------------------------------------
    def blobs(self):
        """(Rx blob, the bridge's Rx blob) for the snapshot (empty: none)."""
        rx = self.rx.blob if self.rx is not None else b""
        brx = self.bridge_rx.blob if self.bridge_drug and self.bridge_rx is not None else b""
        return rx, brx

    def take_up_rx(self, rx_blob, bridge_blob):
        """After a restart: the stored prescriptions (SNAP fields already set). One that
        does not parse is dropped and remembered (rx_bad: no delivery until a clinician
        programs the pump again)."""
        if rx_blob:
            try:
                self.rx = rxmod.parse(rx_blob)
            except rxmod.RxError:
                self.rx = None
                self.rx_bad = True
        if self.bridge_drug and bridge_blob:
            # its blob is empty when the old drug had no prescription
            try:
                self.bridge_rx = rxmod.parse(bridge_blob)
            except rxmod.RxError:
                self.rx_bad = True
        if self.rx is not None and self.rx.low_nl:
            self.low_nl = self.rx.low_nl
