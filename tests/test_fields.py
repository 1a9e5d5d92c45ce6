"""One model of every STATUS field (host_tools/theca/log/fields.py, issue 22): it covers the
protocol's Status exactly, and no writer lists a STATUS field by hand; each renders from
the model (records, jsonl per line and as matrices, csv, parquet, the table; `status
--json` is the model's fields with the identity and flags beside them)."""

from __future__ import annotations

import ast
from pathlib import Path

import theca_protocol as tp
from theca.log import fields as F
from theca_protocol import names as N

ROOT = Path(__file__).resolve().parents[1]
WRITERS = sorted((ROOT / "host_tools" / "theca" / "log" / "writers").glob("*.py"))
# (a name an event's argument shares, `drug`, says nothing of STATUS)
EVENT_ARGS = {a.name for ev in N.EVENTS.values() for a in ev.args if a is not None}
STATUS_NAMES = (set(F.STATUS_RAW) | {f.name for f in F.STATUS_FIELDS}) - EVENT_ARGS


def status_names_written(source: str) -> set[str]:
    """STATUS field names (raw or the model's) written as string constants in `source`."""
    return {n.value for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value in STATUS_NAMES}


def test_the_model_covers_the_protocol_s_status_exactly():
    used = [r for f in F.STATUS_FIELDS for r in f.raw]
    assert sorted(used) == sorted(F.STATUS_RAW), "a Status field the model misses or repeats"
    assert [sc.name for sc in tp.Status.subcons] == list(F.STATUS_RAW)
    assert len({f.name for f in F.STATUS_FIELDS}) == len(F.STATUS_FIELDS)
    for f in F.STATUS_FIELDS:
        assert f.kind in ("int", "code", "milli", "milli2", "time", "alarm_mask", "drug_id"), f
        assert (f.table is not None) == (f.kind == "code"), f
    shown = {n for n, _, _ in F.TABLE_COLUMNS} | set(F.TABLE_CHANGES)
    assert shown <= set(F.BY_NAME)


def test_the_check_sees_a_field_listed_by_hand():
    assert status_names_written('col["reservoir_nl"]\nx = {"refill_due": 1}\n') == {
        "reservoir_nl", "refill_due"}
    assert not status_names_written('print("status")\n')


def test_no_writer_lists_a_status_field_by_hand():
    bad = {str(f.relative_to(ROOT)): status_names_written(f.read_text()) for f in WRITERS}
    assert not {k: v for k, v in bad.items() if v}, bad
