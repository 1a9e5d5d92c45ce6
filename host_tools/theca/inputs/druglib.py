"""The drug library: per-drug hard and soft limits, shared by host and firmware.

The file is `firmware/druglib.json` in the repository (the firmware ships the
same file, so host and device enforce the same limits). A deployment can
replace it: set `THECA_DRUGLIB` to another file, or pass a path.

Hard limits can never be exceeded. Soft limits can, but only when the
clinician confirms (`--override-soft-limit`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from theca.errors import BadInput

#: Environment variable naming a replacement drug library file.
ENV_VAR = "THECA_DRUGLIB"
#: Library format this code understands.
FORMAT_VERSION = 1

_U32 = 2**32 - 1
_LIMIT_KEYS = ("max_conc_ng_ml", "max_ng_day", "max_ng_hour", "max_bolus_ng",
               "soft_conc_ng_ml", "soft_ng_day")
#: The titration soft limit (host-checked): the largest increase of the daily dose (basal
#: plus timed boluses) per change, as a percentage of the dose in force or, when
#: titration_ng_day is not 0, as that amount; and the shortest interval between increases.
_TITRATION_KEYS = ("titration_pct", "titration_ng_day", "titration_interval_h")
#: The soft lower limit `min_per_day` (a daily dose below it is a likely unit slip; 0: none)
#: and the fill's stability: the longest time a fill may stay in the pump, and the first
#: fill's where the label asks for an earlier first refill (0: none), in days.
_CLINIC_KEYS = ("min_ng_day", "stability_days", "first_fill_stability_days")
_KEYS = ("id", "name", *_LIMIT_KEYS, *_TITRATION_KEYS, *_CLINIC_KEYS)
#: Limits that can never exceed another: (lower, upper).
_ORDER = (("soft_conc_ng_ml", "max_conc_ng_ml"), ("soft_ng_day", "max_ng_day"),
          ("max_bolus_ng", "max_ng_hour"), ("max_ng_hour", "max_ng_day"),
          ("min_ng_day", "soft_ng_day"), ("first_fill_stability_days", "stability_days"))
#: The longest stability a library may give a fill, days (ten years: a pump's life).
MAX_STABILITY_DAYS = 3650
#: Beside each limit, where its number comes from (a label, a guideline): optional text.
_SOURCE_KEYS = tuple(k + "_source" for k in (*_LIMIT_KEYS, *_TITRATION_KEYS, *_CLINIC_KEYS))


@dataclass(frozen=True)
class Drug:
    """One drug's entry. Units: ng/mL, ng per rolling 24 h, ng per rolling 1 h, ng per
    single bolus. `sources` maps a limit's key to where its number comes from."""

    id: int
    name: str
    max_conc_ng_ml: int
    max_ng_day: int
    max_ng_hour: int
    max_bolus_ng: int
    soft_conc_ng_ml: int
    soft_ng_day: int
    titration_pct: int = 0
    titration_ng_day: int = 0
    titration_interval_h: int = 0
    min_ng_day: int = 0
    stability_days: int = 0
    first_fill_stability_days: int = 0
    sources: tuple[tuple[str, str], ...] = ()

    def titration_step_ng(self, old_ng_day: int) -> int:
        """The largest increase of the daily dose one change may make from old_ng_day."""
        if self.titration_ng_day:
            return self.titration_ng_day
        return old_ng_day * self.titration_pct // 100


#: A drug whose hard daily maximum is at most this (ng) is dosed in mcg in the clinic
#: (fentanyl, sufentanil, clonidine, ziconotide, baclofen: PACC 2017 writes their doses in
#: mcg/day); above it in mg (morphine, hydromorphone, bupivacaine).
MCG_DRUG_MAX_NG_DAY = 2 * 10**6  # 2 mg


def dose_unit(drug: Drug | None) -> str:
    """"mcg" or "mg": the unit a clinician doses this drug in (mg when unknown)."""
    return "mcg" if drug is not None and drug.max_ng_day <= MCG_DRUG_MAX_NG_DAY else "mg"


@dataclass(frozen=True)
class DrugLibrary:
    """A validated drug library: `drugs` in file order, `path` it came from."""

    version: int
    drugs: tuple[Drug, ...]
    path: Path | None = None
    source: str = ""

    def names(self) -> list[str]:
        """Drug names, in file order."""
        return [d.name for d in self.drugs]

    def find(self, name: str) -> Drug | None:
        """The drug called `name` (case and surrounding spaces ignored), or None."""
        key = name.strip().casefold()
        for d in self.drugs:
            if d.name.casefold() == key:
                return d
        return None

    def lookup(self, name, field: str = "drug") -> Drug:
        """The drug called `name`; BadInput naming `field` and listing known drugs if none."""
        if not isinstance(name, str) or not name.strip():
            raise BadInput.at(field, f"expected a drug name ({', '.join(self.names())}), got {name!r}")
        d = self.find(name)
        if d is None:
            raise BadInput.at(
                field, f'unknown drug "{name}" (the drug library has: {", ".join(self.names())})'
            )
        return d

    def by_id(self, drug_id: int) -> Drug | None:
        """The drug with device id `drug_id`, or None."""
        for d in self.drugs:
            if d.id == drug_id:
                return d
        return None


#: What the device reads of the library (firmware/guard.py): the hard limits and the fill's
#: stability. The host checks the soft limits; the sources are for people. A board's heap
#: has no room for the whole file.
DEVICE_KEYS = ("id", "max_conc_ng_ml", "max_ng_day", "max_ng_hour", "max_bolus_ng",
               "stability_days", "first_fill_stability_days")


def device_json(lib: DrugLibrary) -> str:
    """The library as the device reads it (DEVICE_KEYS of every drug), as JSON text."""
    drugs = [{k: getattr(d, k) for k in DEVICE_KEYS} for d in lib.drugs]
    return json.dumps({"version": lib.version, "drugs": drugs}, separators=(",", ":")) + "\n"


def write_device_library(folder: Path, lib: DrugLibrary | None = None) -> Path:
    """Write the device's library (`device_json`) as folder/druglib.json; returns its path."""
    path = Path(folder) / "druglib.json"
    path.write_text(device_json(lib or load_druglib()))
    return path


def default_path() -> Path:
    """`$THECA_DRUGLIB` if set, else the firmware's druglib.json: the checkout's, or the
    copy an installed `theca` carries (theca.paths)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    from theca import paths

    return paths.FIRMWARE / "druglib.json"


def _keys_ok(entry: dict, f: str, errs: list[str]) -> bool:
    # every key known, every limit present, every source a text
    bad = False
    for k in sorted(set(entry) - set(_KEYS) - set(_SOURCE_KEYS)):
        errs.append(f"{f}: unknown key \"{k}\" (expected {', '.join(_KEYS)}, and a "
                    "KEY_source text beside a limit)")
        bad = True
    for k in _SOURCE_KEYS:
        if k in entry and not isinstance(entry[k], str):
            errs.append(f"{f}: {k}: expected a text naming the source, got {entry[k]!r}")
            bad = True
    for k in _KEYS:
        if k not in entry:
            errs.append(f"{f}: missing \"{k}\"")
            bad = True
    return not bad


def _values_ok(entry: dict, f: str, ids: set[int], names: set[str], errs: list[str]) -> bool:
    # the id free and in range, the name unique, every limit a u32 in order
    bad = False
    did, name = entry["id"], entry["name"]
    # Ids go into a u8 of the Rx blob; 0 is kept free to mean "no drug".
    if isinstance(did, bool) or not isinstance(did, int) or not 1 <= did <= 255:
        errs.append(f"{f}.id: expected an integer 1..255, got {did!r}")
        bad = True
    elif did in ids:
        errs.append(f"{f}.id: {did} is used by another drug")
        bad = True
    if name.casefold() in names:
        errs.append(f"{f}.name: \"{name}\" appears twice")
        bad = True
    for k in _LIMIT_KEYS:
        v = entry[k]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _U32:
            errs.append(f"{f}.{k}: expected an integer 1..{_U32}, got {v!r}")
            bad = True
    for k in _TITRATION_KEYS:
        v = entry[k]
        lo = 1 if k == "titration_pct" else 0
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= _U32:
            errs.append(f"{f}.{k}: expected an integer {lo}..{_U32}, got {v!r}")
            bad = True
    for k in _CLINIC_KEYS:
        v = entry[k]
        top = _U32 if k == "min_ng_day" else MAX_STABILITY_DAYS
        lo = 1 if k == "stability_days" else 0
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= top:
            errs.append(f"{f}.{k}: expected an integer {lo}..{top}, got {v!r}")
            bad = True
    if bad:
        return False
    wrong = [(lo, hi) for lo, hi in _ORDER if entry[lo] > entry[hi]]
    if wrong:
        errs.append(f"{f}: {wrong[0][0]} is above {wrong[0][1]}")
        return False
    return True


def _drug(entry, i: int, where: str, ids: set[int], names: set[str],
          errs: list[str]) -> Drug | None:
    # one entry of "drugs", or None with its problems in errs
    f = f"{where}: drugs[{i}]"
    if not isinstance(entry, dict):
        errs.append(f"{f}: expected an object")
        return None
    if not _keys_ok(entry, f, errs):
        return None
    name = entry["name"]
    if not isinstance(name, str) or not name.strip() or not name.isascii():
        errs.append(f"{f}.name: expected a non-empty ASCII name, got {name!r}")
        return None
    if not _values_ok(entry, f"{where}: drugs[{i}] ({name})", ids, names, errs):
        return None
    ids.add(entry["id"])
    names.add(name.casefold())
    srcs = tuple((k[: -len("_source")], entry[k]) for k in _SOURCE_KEYS if k in entry)
    return Drug(**{k: entry[k] for k in _KEYS}, sources=srcs)


def parse_druglib(data, where: str = "drug library") -> DrugLibrary:
    """Validate an already-decoded library (a dict); BadInput lists every problem."""
    errs: list[str] = []
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a JSON object with \"version\" and \"drugs\"")
    version = data.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        errs.append(f"{where}: version: expected {FORMAT_VERSION}, got {version!r}")
    raw = data.get("drugs")
    if not isinstance(raw, list) or not raw:
        errs.append(f"{where}: drugs: expected a non-empty list of drugs")
        raw = []
    ids: set[int] = set()
    names: set[str] = set()
    drugs = [d for i, e in enumerate(raw, 1) if (d := _drug(e, i, where, ids, names, errs))]
    if errs:
        raise BadInput(errs)
    source = data.get("source", "")
    assert isinstance(version, int)  # checked above: a bad version is in errs
    return DrugLibrary(version=version, drugs=tuple(drugs),
                       source=source if isinstance(source, str) else "")


def load_druglib(path: str | os.PathLike | None = None) -> DrugLibrary:
    """Load and validate the drug library from `path` (default: see `default_path`)."""
    p = Path(path) if path is not None else default_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"{p}: cannot read the drug library: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{p}:{e.lineno}: drug library is not valid JSON: {e.msg}") from None
    lib = parse_druglib(data, str(p))
    return DrugLibrary(version=lib.version, drugs=lib.drugs, path=p, source=lib.source)
