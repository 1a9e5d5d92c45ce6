"""The wheel holds every package of the host tools: each folder with an __init__.py under
host_tools/theca and protocol/theca_protocol is listed in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_packaged():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for top, base in (("theca", ROOT / "host_tools" / "theca"),
                      ("theca_protocol", ROOT / "protocol" / "theca_protocol")):
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((top, *rel.parts)))
    assert found - listed == set(), f"packages missing from pyproject.toml: {found - listed}"
    assert listed - found == set(), f"listed but not packages: {listed - found}"
