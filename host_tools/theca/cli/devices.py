"""`theca devices`: the pumps this host knows (as `mpremote devs` lists the boards it sees):
each serial with the ports it last answered on, which of its keys are here, when a command
last used them, and what the host last saw it deliver."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from theca.errors import OK


def add_parser(sub) -> None:
    p = sub.add_parser("devices", help="the pumps this host knows: serial, last port, keys, "
                                       "last used")
    p.add_argument("--json", action="store_true", help="one JSON object per pump")
    p.set_defaults(func=run)


def known() -> list[dict]:
    """Every pump with a key under $THECA_HOME, newest use first."""
    from theca.link import keys as K
    from theca.link import seen

    ports: dict[str, list[str]] = {}
    try:
        m = json.loads((K.home() / "devices.json").read_text())
    except (OSError, ValueError):
        m = {}
    for dev, serial in (m.items() if isinstance(m, dict) else ()):
        ports.setdefault(str(serial), []).append(dev)
    out = []
    for serial in K.known_serials():
        roles = [r for r in K.ROLES if K.key_path(serial, r).exists()]
        used = [K.counter_path(serial, r).stat().st_mtime for r in K.ROLES
                if K.counter_path(serial, r).exists()]
        out.append({
            "serial": serial,
            "ports": sorted(ports.get(serial, [])),
            "keys": roles,
            "twin": K.twin_dir(serial).is_dir(),
            "last_used": (datetime.fromtimestamp(max(used), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                          if used else None),
            "delivered_ul_seen": seen.load(serial).get("delivered_ul"),
        })
    out.sort(key=lambda d: d["last_used"] or "", reverse=True)
    return out


def run(args) -> int:
    from theca.link import keys as K

    pumps = known()
    if args.json:
        for d in pumps:
            print(json.dumps(d))
        return OK
    if not pumps:
        print(f"no pump known here ({K.home()} holds no keys): `theca flash` provisions a "
              "board, `theca twin` makes a twin", file=sys.stderr)
        return OK
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Pumps known in {K.home()}", title_justify="left")
    for col in ("serial", "last port", "keys", "last used (UTC)", "delivered seen"):
        t.add_column(col)
    for d in pumps:
        seen = d["delivered_ul_seen"]
        t.add_row(d["serial"] + (" (twin, running)" if d["twin"] else ""),
                  ", ".join(d["ports"]) or "-", ", ".join(d["keys"]) or "-",
                  (d["last_used"] or "-").replace("T", " ").rstrip("Z"),
                  f"{seen / 1000:.3f} mL" if isinstance(seen, int | float) else "-")
    Console(highlight=False, width=None if sys.stdout.isatty() else 132).print(t)
    return OK
