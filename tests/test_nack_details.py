"""A NACK's detail means one thing per command and result, declared in the protocol
definition (messages.Message.details, names.RESULT_DETAILS) and decoded on the host from
there (issue 22). Here every `return md.NACK_X, detail` of the firmware's command
handlers is read and its detail classified by what it is (a field, a deny reason, the
mode...): it must be the kind the definition declares for that command and result."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import theca_protocol as tp
from theca.link import client
from theca_protocol import names as N

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
# the firmware function that answers each command with (result, detail)
HANDLED = {
    ("clinic.py", "program"): "PROGRAM",
    ("clinic.py", "refill"): "REFILL",
    ("clinic.py", "set_time"): "SET_TIME",
    ("clinic.py", "catheter"): "CATHETER",
    ("clinic.py", "prime"): "PRIME",
    ("dosing.py", "clinician_bolus"): "CLINICIAN_BOLUS",
    ("pump.py", "suspend"): "SUSPEND",
    ("pump.py", "resume"): "RESUME",
    ("commands.py", "_read_rx"): "READ_RX",
}
_DENY = {n.upper() for n in N.DENY_REASONS.values()} | {"reason"}


def kind_of(expr: str) -> str:
    """What a detail expression is, by its spelling in the firmware."""
    last = expr.split(".")[-1]
    if "FIELD_" in expr or expr == "e.field":
        return "field"
    if last == "mode":
        return "mode"
    if last == "VERSION":
        return "rx_version"
    if last in _DENY:
        return "deny"
    if expr == "0":
        return "none"
    return f"unknown ({expr})"


def nacks(source: str, fn_name: str) -> list[tuple[str, str]]:
    """(result name, detail expression) of each `return md.NACK_X, detail` in fn_name."""
    out = []
    for fn in ast.walk(ast.parse(source)):
        if not (isinstance(fn, ast.FunctionDef) and fn.name == fn_name):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
                res, detail = node.value.elts[0], node.value.elts[1]
                r = ast.unparse(res)
                if r.startswith("md.NACK_"):
                    out.append((r[len("md.NACK_"):].lower(), ast.unparse(detail)))
    return out


def test_the_check_sees_a_wrong_detail():
    bad = "def prime(p, now, who):\n    return md.NACK_LIMIT, p.mode\n"
    ((result, detail),) = nacks(bad, "prime")
    assert tp.MESSAGES[tp.TYPES["PRIME"]].detail_kind(result) != kind_of(detail)


@pytest.mark.parametrize("where", sorted(HANDLED), ids=lambda w: f"{w[0]}:{w[1]}")
def test_each_nack_detail_is_of_the_declared_kind(where):
    module, fn = where
    m = tp.MESSAGES[tp.TYPES[HANDLED[where]]]
    found = nacks((FW / module).read_text(), fn)
    assert found, f"{module}:{fn} gives no NACK (is the table above still right?)"
    for result, detail in found:
        assert kind_of(detail) == m.detail_kind(result), (m.name, result, detail)


def test_every_declared_kind_is_known_and_the_host_words_each():
    for m in tp.COMMANDS.values():
        for result, kind in m.details.items():
            assert result in N.RESULTS.values() and kind in N.DETAIL_KINDS, (m.name, result)
    # the host's words come from the declared kind: a deny reason is named, never a number
    t = tp.TYPES
    nack = {v: k for k, v in N.RESULTS.items()}
    deny = {v: k for k, v in N.DENY_REASONS.items()}
    words = client.explain(t["REFILL"], nack["limit"], deny["capacity"])
    assert "capacity" in words and "refill refused" in words
    words = client.explain(t["PRIME"], nack["limit"], deny["not_running"])
    assert "not_running" in words
    words = client.explain(t["SUSPEND"], nack["invalid"], 0)
    assert "the pump is stopped" in words
