"""TOML input files (prescriptions, scenarios, campaigns): reading one with a message that
names the file, locating a field's line for `file:line:` messages, and checking a table's
keys (unknown ones with a did-you-mean, missing ones with an example)."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

from theca.errors import BadInput, Problems


def read_toml(path: str | os.PathLike) -> tuple[dict, str]:
    """Read and decode a TOML file -> (data, text); BadInput naming the file on failure."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise BadInput(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{p}: not UTF-8 text (byte {e.start})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{p}: not valid TOML: {e}") from None
    except ValueError:
        # an integer of more digits than Python reads (4300): named with its line
        m = re.search(r"\d{4000,}", text)
        line = text.count("\n", 0, m.start()) + 1 if m else "?"
        raise BadInput(f"{p}:{line}: a number of {len(m.group()) if m else 'too many'} digits: "
                       "no field takes one that long") from None
    except RecursionError:
        raise BadInput(f"{p}: arrays or tables nested too deep to read (a damaged or crafted "
                       "file?)") from None


_HEADER_RE = re.compile(r"\s*(\[\[?)\s*([^\]\[]+?)\s*(\]\]?)\s*(?:#.*)?")
_PART_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)(?:\[(\d+)\])?")


def toml_locator(text: str) -> Callable[[str | None], int | None]:
    """A function mapping a field path (`events[3].volume`) to its 1-based line in `text`.

    A cheap scan of table headers and `key =` lines, not a TOML parser: it
    finds keys in `[table]` and `[[array]]` sections; for inline tables it
    returns the line of the enclosing key, and None if it cannot tell.
    """
    lines = text.splitlines()
    headers: list[tuple[int, str, bool]] = []
    for i, line in enumerate(lines):
        m = _HEADER_RE.fullmatch(line)
        if m and (m.group(1) == "[[") == (m.group(3) == "]]"):
            name = ".".join(p.strip().strip("\"'") for p in m.group(2).split("."))
            headers.append((i, name, m.group(1) == "[["))
    header_lines = {h[0] for h in headers}

    def key_line(start: int, key: str) -> int | None:
        pat = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for j in range(start, len(lines)):
            if j in header_lines:
                return None
            if pat.match(lines[j]):
                return j + 1
        return None

    def locate(fieldpath: str | None) -> int | None:
        if not fieldpath:
            return None
        matches = [_PART_RE.fullmatch(p) for p in fieldpath.split(".")]
        parts = [m for m in matches if m is not None]
        if len(parts) != len(matches):
            return None
        body, end, prefix, found = 0, len(lines), "", None
        for m in parts:
            name, idx = m.group(1), m.group(2)
            joined = f"{prefix}.{name}" if prefix else name
            cands = [h for h in headers if body <= h[0] < end and h[1] == joined]
            hdr = None
            if idx is not None:
                arr = [h for h in cands if h[2]]
                if len(arr) >= int(idx) >= 1:
                    hdr = arr[int(idx) - 1]
            elif cands and not cands[0][2]:
                hdr = cands[0]
            if hdr is None:
                ln = key_line(body, name)
                return ln if ln is not None else found
            found = hdr[0] + 1
            body = hdr[0] + 1
            end = next((h[0] for h in headers
                        if h[0] > hdr[0] and not h[1].startswith(joined + ".")), len(lines))
            prefix = joined
        return found

    return locate



#: The hint for a missing key: how the field is written (a prescription's, and what
#: scenario events share with it).
EXAMPLES = {
    "drug": 'drug = "morphine"', "concentration": 'concentration = "10 mg/mL"',
    "steps": '[[steps]] with start = "00:00" and rate = "1.5 mg/day"',
    "start": 'start = "08:00"', "rate": 'rate = "1.5 mg/day"', "dose": 'dose = "0.1 mg"',
    "duration": 'duration = "10 min"', "lockout": 'lockout = "60 min"',
    "max_per_day": "max_per_day = 4",
}


def check_keys(table: Mapping, allowed: tuple[str, ...], required: tuple[str, ...],
               prefix: str, probs: Problems, examples: Mapping[str, str] | None = None) -> bool:
    """Report unknown keys (with a did-you-mean) and missing required keys; True if none
    missing. `examples`: the hint for a missing key (default: a prescription's)."""
    for k in table:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f'did you mean "{close[0]}"? ' if close else ""
            probs.add(f"{prefix}.{k}" if prefix else str(k),
                      f"unknown key ({hint}expected {', '.join(allowed)})")
    ok = True
    for k in required:
        if k not in table:
            ex = (EXAMPLES if examples is None else examples).get(k)
            probs.add(f"{prefix}.{k}" if prefix else k, f"missing{f' (e.g. {ex})' if ex else ''}")
            ok = False
    return ok


def table_list(value, fieldname: str, probs: Problems) -> list:
    """An array of tables (`[[name]]`), or [] with a message if it is something else."""
    if isinstance(value, list) and all(isinstance(x, Mapping) for x in value):
        return value
    probs.add(fieldname, f"expected [[{fieldname.rsplit('.', 1)[-1]}]] tables, got {type(value).__name__}")
    return []
