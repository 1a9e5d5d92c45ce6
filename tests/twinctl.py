"""The host side of the twin's test-only control channel (boards/unix/board.py, `_control`).

A `ControlledTwin` runs the firmware's own main.py on the unix port with its link and its
world in the test's hands: true time moves only when the test says `run`, every command
is a signed frame delivered at the true time the test chooses, faults and power cuts come
when it says, and the physical truth (every stroke, with the drug at the catheter tip)
streams to a file outside the firmware's heap. The same inputs give the same run, so
hypothesis can shrink a failing sequence.
"""

from __future__ import annotations

import json
import secrets
import select
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import theca_protocol as tp
from theca import paths
from theca.inputs.druglib import default_path as druglib_path
from theca.twin.truthfile import max_window as truth_max_window
from theca_protocol.storage import TruthRecord

CLINICIAN, PATIENT = 1, 2
T = {m.name: m.type for m in tp.COMMANDS.values()}
# the truth stream's record, as boards/unix/board.py's Mechanism writes it (a twin format,
# not the protocol's): true time, nL, drug at the tip in 1e-6 ng
_REC = tp.compiled(TruthRecord)
#: Longest a control request may take in real seconds (a 6 h run takes well under 1 s).
CTL_TIMEOUT_S = 60


@dataclass
class Reply:
    result: str  # "ack" or the NACK reason
    detail: int
    body: bytes
    time: int = 0  # the pump's wall clock, from the reply's header

    @property
    def limit(self) -> str:
        return tp.DENY_REASONS.get(self.detail, f"reason_{self.detail}")


@dataclass
class ControlledTwin:
    """A twin whose clock, link, faults and power the test drives (see module doc)."""

    workdir: Path
    start: int
    reservoir_nl: int = 20_000_000
    conc_ng_ml: int = 10_000_000
    catheter_nl: int = 150_000
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = {CLINICIAN: secrets.token_bytes(32), PATIENT: secrets.token_bytes(32)}
        self.counter = {CLINICIAN: 0, PATIENT: 0}
        self.cmd_id = 0
        self.image = self.workdir / "flash.img"
        self.truth_path = self.workdir / "truth.json"
        self.stream = self.workdir / "truth.bin"
        self.tlog = self.workdir / "run.tlog"
        self.faults: list[dict] = []
        self.boots = 0
        self.now = self.start  # true time
        self.truth: dict = {}
        self.proc: subprocess.Popen | None = None
        self.hung = False  # it stopped answering: its folder is evidence, keep it
        self.damage: list[dict] = []  # storage damage done while it is off (next boot)
        self._boot()

    # -- process -----------------------------------------------------------------------
    def _config(self) -> dict:
        cfg = {
            "mode": "control",
            "start": self.now,
            "serial": "CTRL00000001",
            "reservoir_nl": self.reservoir_nl,
            "reservoir_conc_ng_ml": self.conc_ng_ml,
            "catheter_nl": self.catheter_nl,
            "keys": {"clinician": self.keys[CLINICIAN].hex(), "patient": self.keys[PATIENT].hex()},
            "flash_image": str(self.image),
            "truth": str(self.truth_path),
            "truth_stream": str(self.stream),
            "tlog": str(self.tlog),
            "tlog_append": self.boots > 0,
            "faults": self.faults,
            "druglib": str(druglib_path()),
            "boot_cause": 5 if self.boots else 0,
            "storage_damage": self.damage,
        }
        cfg.update(self.extra)
        return cfg

    def _boot(self) -> None:
        cfgp = self.workdir / f"twin{self.boots}.json"
        cfgp.write_text(json.dumps(self._config()))
        env = {"MICROPYPATH": paths.firmware_path("unix", None), "THECA_SIM": str(cfgp),
               "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen(
            [paths.micropython(), str(paths.FIRMWARE / "main.py")], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.boots += 1
        self.ctl("truth")

    def ctl(self, op: str, **kw) -> dict:
        """One request on the control channel; its answer (the truth comes with each).
        A firmware that does not answer within CTL_TIMEOUT_S (virtual time costs little
        real time) is hung: RuntimeError. Every request is kept in ctl.log to replay."""
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        req = json.dumps({"op": op, **kw})
        with open(self.workdir / "ctl.log", "a") as f:
            f.write(f"{self.boots} {req}\n")
        self.proc.stdin.write((req + "\n").encode())
        self.proc.stdin.flush()
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], CTL_TIMEOUT_S)
            if not ready:
                self.hung = True
                self.proc.kill()
                self.proc.wait()
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"the firmware did not answer {op} within {CTL_TIMEOUT_S} s "
                                   f"(hung); requests in {self.workdir / 'ctl.log'}; its "
                                   f"stderr: {err[-2000:]}")
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"the twin ended (status {self.proc.wait()}) during {op}: "
                                   f"{err[-3000:]}")
            if line.startswith(b"@@ctl "):
                out = json.loads(line[6:])
                self.truth = out["truth"]
                self.now = self.truth["device_time"]
                return out

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.ctl_end()
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait()

    def ctl_end(self) -> None:
        assert self.proc is not None and self.proc.stdin
        self.proc.stdin.write(b'{"op": "end"}\n')
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    # -- the world -----------------------------------------------------------------------
    def run(self, seconds: int) -> None:
        """Let true time go on by `seconds`."""
        self.ctl("run", s=int(seconds))

    def fault(self, kind: str, duration_s: int) -> None:
        """A motor stall or an occlusion from now, for duration_s (kept across reboots)."""
        self.faults.append({"kind": kind, "at": self.now, "duration_s": duration_s})
        self.ctl("fault", kind=kind, duration_s=duration_s)

    def fill(self, nl: int, conc: int) -> bool:
        """The clinician injects nl of conc through the septum (physical only)."""
        return self.ctl("fill", nl=nl, conc=conc)["ok"]

    def refill(self, nl: int, conc: int, pocket_nl: int = 0) -> int | None:
        """A refill visit (physical only): the reservoir emptied, then nl of conc injected
        (pocket_nl of it beside the pump). Returns what was aspirated (None: overfill)."""
        return self.ctl("refill", nl=nl, conc=conc, pocket=pocket_nl)["residual"]

    def new_catheter(self, nl: int) -> None:
        """A catheter revision (physical only): the old catheter is gone, an empty one of
        nl is in place."""
        self.ctl("catheter", nl=nl)

    def power_cut(self, down_s: int, damage: list[dict] | None = None,
                  image: Path | None = None) -> None:
        """The supply fails now and comes back after down_s (the pump boots again).
        `damage`: storage faults done meanwhile ({"file", "damage"}, as a scenario's);
        `image`: a flash image put in place of the pump's meanwhile (a rollback)."""
        assert self.proc is not None and self.proc.stdin
        self.proc.stdin.write(b'{"op": "cut"}\n')
        self.proc.stdin.flush()
        rc = self.proc.wait(timeout=60)
        if rc != 7:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"power cut: the twin ended with {rc}, not 7: {err[-3000:]}")
        self.truth = json.loads(self.truth_path.read_text())
        self.now = self.truth["device_time"] + down_s
        if image is not None:
            shutil.copyfile(image, self.image)
        self.damage = list(damage or ())
        try:
            self._boot()
        finally:
            self.damage = []

    # -- the link --------------------------------------------------------------------------
    def command(self, name: str, body: bytes = b"", role: int = CLINICIAN,
                challenge: int | None = None) -> Reply:
        """Sign and send a command now; its reply (a frame is always answered, and the
        reply's MAC is checked). A state-changing command first gets the device's
        CHALLENGE, as a host does (`challenge` given: that one instead)."""
        if challenge is None and not tp.COMMANDS[T[name]].reads:
            rep = self.command("CHALLENGE", b"", role)
            assert rep.result == "ack", rep
            challenge = tp.ChallengeReply.parse(rep.body).challenge
        self.counter[role] += 1
        self.cmd_id += 1
        frame = tp.build_command(T[name], body, role, self.keys[role], self.cmd_id,
                                 self.counter[role], self.cmd_id & 0xFFFF, self.now,
                                 challenge or 0)
        return self.send(frame, name, role, self.counter[role])

    def send(self, frame: bytes, name: str = "", role: int = CLINICIAN,
             counter: int | None = None) -> Reply:
        """Put a frame on the link now; its reply, whose MAC must be right for the
        command's role and counter unless the device cannot sign it."""
        out = self.ctl("frame", hex=(tp.cobs_encode(frame) + b"\x00").hex())
        wire = bytes.fromhex(out["reply"])
        assert wire, f"{name}: the firmware did not answer"
        fr = tp.cobs_decode(wire[:-1])
        hdr, payload = tp.parse_frame(fr)
        n = tp.ReplyHead.sizeof()
        head = tp.ReplyHead.parse(payload[:n])
        result = tp.RESULTS[head.result]
        if counter is not None and result not in tp.UNSIGNED_RESULTS:
            assert tp.verify_reply(fr, self.keys[role], role, counter), f"{name}: reply MAC"
        return Reply(result, head.detail, bytes(payload[n : -tp.MAC_SIZE]), hdr.time)

    def program(self, rx) -> Reply:
        return self.command("PROGRAM", rx.to_blob())

    def status_wall(self) -> int:
        """The pump's wall clock (UTC device seconds) as its status reply says."""
        return self.command("GET_STATUS").time

    def status(self) -> dict:
        rep = self.command("GET_STATUS")
        return dict(tp.Status.parse(rep.body))

    # -- the truth -------------------------------------------------------------------------
    def strokes(self) -> list[tuple[int, int, int]]:
        """Every stroke so far: (true time, nL, drug at the tip in 1e-6 ng)."""
        data = self.stream.read_bytes() if self.stream.exists() else b""
        return [_REC.unpack_from(data, o) for o in range(0, len(data) - len(data) % 16, 16)]


def max_window(strokes: list[tuple[int, int, int]], window_s: int) -> int:
    """The most drug (1e-6 ng) that reached the tip in any window of window_s (exact): the
    `--truth` document's rule (twin/truthfile.py) over the strokes."""
    return truth_max_window([(t, m) for t, _, m in strokes], window_s)
