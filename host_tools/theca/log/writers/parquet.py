"""`--format parquet`: one typed row per frame, with the device serial on each row."""

from __future__ import annotations

import datetime as _dt

import numpy as np
import theca_protocol as tp
from theca_protocol import names as N

from theca.log import fields as F
from theca.log import layout as L
from theca.log.devtime import EPOCH_UNIX
from theca.log.frames import K_INFO, K_STATUS, Selection, frame_kinds, frame_times, status_columns
from theca.log.records import Renderer, to_json
from theca.log.stats import Summary
from theca.log.tlog import Tlog
from theca.log.writers.base import Writer

# --- Parquet: one typed row per frame, for DuckDB / pandas over many pumps --------------------


def parquet_schema():
    """The Arrow schema of `--format parquet` (one column per field of any record kind).

    `serial` (from the log's DEVICE_INFO) is on every row so that many pumps'
    logs can be queried together; `t` and other times are UTC timestamps;
    volumes are uL (float64); codes are their names. Event fields become
    columns of their own (typed by the event table); what fits no column
    (a reply's body, a command's body) is JSON text in `body` or `details`.
    """
    import pyarrow as pa

    ts = pa.timestamp("s", tz="UTC")
    s, u8, u16, u32, f64 = pa.string(), pa.uint8(), pa.uint16(), pa.uint32(), pa.float64()
    cols: list[tuple[str, object]] = [
        ("serial", s), ("kind", s), ("t", ts), ("seq", u16), ("type", u8), ("version", u8),
    ]
    event_args = {a.name for ev in N.EVENTS.values() for a in ev.args if a is not None}
    for f in F.STATUS_FIELDS:  # the field model's, in its order
        cols.append((f.name, _status_type(f, event_args)))
    cols += [("event_seq", u32), ("event", s), ("who", s)]
    by_kind = {"int": u32, "nl": f64, "time": ts, "i32": pa.int32(), "mask": pa.list_(s),
               "SOFT_LIMITS_MASK": pa.list_(s)}
    names = {n for n, _ in cols}
    for ev in N.EVENTS.values():
        for arg in ev.args:
            if arg is not None and arg.name not in names:
                cols.append((arg.name, by_kind.get(arg.kind, s)))
                names.add(arg.name)
    for n, ty in [
        ("a", u32), ("b", u32), ("c", u32), ("d", u32),
        # reply and command
        ("cmd", s), ("cmd_id", u32), ("result", s), ("detail", u32), ("role", s),
        ("counter", u32), ("body", s), ("mac", s),
        # device_info
        ("runtime", s), ("firmware", s), ("schema", u32), ("schema_ok", pa.bool_()),
        ("stroke_nl", u32), ("capacity_ul", f64), ("low_reservoir_ul", f64),
        ("catheter_ul", f64), ("max_rate_ul_h", f64), ("min_rate_ul_day", f64),
        # unknown
        ("reason", s), ("payload", s),
        ("details", s),
    ]:
        if n not in names:
            cols.append((n, ty))
            names.add(n)
    return pa.schema(cols)


def _status_type(f: F.Field, event_args: set[str]):
    # the Arrow type of a STATUS field: by its kind; an int as wide as its raw field (as an
    # event's int argument of the same name, u32, when there is one: one column for both)
    import pyarrow as pa

    if f.kind in ("milli", "milli2"):
        return pa.float64()
    if f.kind == "time":
        return pa.timestamp("s", tz="UTC")
    if f.kind == "alarm_mask":
        return pa.list_(pa.string())
    if f.kind in ("code", "drug_id"):
        return pa.string()
    width = 4 if f.name in event_args else F.RAW_BYTES[f.raw[0]]
    return {1: pa.uint8(), 2: pa.uint16(), 4: pa.uint32()}[width]


def _fits(ty, v) -> bool:
    import pyarrow as pa

    if pa.types.is_boolean(ty):
        return type(v) is bool
    if pa.types.is_integer(ty) or pa.types.is_timestamp(ty):
        if type(v) is not int:
            return False
        if pa.types.is_timestamp(ty):
            return True
        lo, hi = (0, (1 << ty.bit_width) - 1) if pa.types.is_unsigned_integer(ty) else (
            -(1 << (ty.bit_width - 1)), (1 << (ty.bit_width - 1)) - 1)
        return lo <= v <= hi
    if pa.types.is_floating(ty):
        return type(v) in (int, float)
    if pa.types.is_list(ty):
        return type(v) is list and all(type(x) is str for x in v)
    return type(v) is str


def _unix(iso_text: str) -> int:
    return int(_dt.datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp())


def _parquet_row(rec: dict, t_unix: int, schema, r: Renderer) -> dict:
    """A record as a row of the Parquet schema; what fits no column goes to `details`."""
    import pyarrow as pa

    row: dict = {"t": t_unix}
    extra = {}
    for k, v in rec.items():
        if k == "t" or v is None:
            continue
        if k == "drug" and rec.get("kind") == "event" and type(v) is int:
            v = r.drug_name(v)  # prescription_changed carries the drug's id: show its name
            if v is None:
                continue
        if k == "body" and type(v) is not str:
            v = to_json(v)
        idx = schema.get_field_index(k)
        if idx < 0:
            extra[k] = v
            continue
        ty = schema.field(idx).type
        if pa.types.is_timestamp(ty) and type(v) is str:
            try:
                v = _unix(v)
            except ValueError:
                extra[k] = v
                continue
        if _fits(ty, v):
            row[k] = v
        else:
            extra[k] = v
    if extra:
        row["details"] = to_json(extra)
    return row


def _alarm_list_array(masks: np.ndarray):
    """list<string> of alarm names per mask, built from the distinct masks only."""
    import pyarrow as pa

    uniq, inv = np.unique(masks, return_inverse=True)
    lists = [N.alarm_names(int(m)) for m in uniq.tolist()]
    lens_u = np.array([len(x) for x in lists], dtype=np.int64)
    flat = np.array([n for x in lists for n in x] or [""], dtype=object)
    start_u = np.concatenate(([0], np.cumsum(lens_u)[:-1]))
    row_len = lens_u[inv]
    offsets = np.concatenate(([0], np.cumsum(row_len))).astype(np.int32)
    total = int(offsets[-1])
    if total:
        idx = np.repeat(start_u[inv], row_len) + (
            np.arange(total) - np.repeat(offsets[:-1].astype(np.int64), row_len))
        values = pa.array(flat[idx], type=pa.string())
    else:
        values = pa.array([], type=pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


def _status_table(col: dict, serial, schema, r: Renderer):
    """The STATUS rows as an Arrow table of `schema`, built column-wise."""
    import pyarrow as pa

    n = len(col["time"])
    vals = {
        "serial": pa.array(serial, type=pa.string()),
        "kind": pa.array(np.full(n, "status", dtype=object), type=pa.string()),
        "t": pa.array(col["time"] + EPOCH_UNIX, type=schema.field("t").type),
        "seq": pa.array(col["seq"].astype(np.uint16)),
        "type": pa.array(np.full(n, tp.T_STATUS, dtype=np.uint8)),
        "version": pa.array(np.full(n, N.FRAME_VERSION, dtype=np.uint8)),
    }
    for f in F.STATUS_FIELDS:
        vals[f.name] = _status_array(f, col, r, schema.field("t").type)
    arrays = []
    for f in schema:
        v = vals.get(f.name)
        arrays.append(pa.nulls(n, f.type) if v is None else v.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _status_array(f: F.Field, col: dict, r: Renderer, ts):
    # a STATUS field as an Arrow array, column-wise, by the field model
    import pyarrow as pa

    x = col[f.raw[0]]
    if f.kind == "milli":
        return pa.array(x / 1000)
    if f.kind == "milli2":
        return pa.array(x.astype(np.float64) + col[f.raw[1]] / 1000)
    if f.kind == "time":
        t = x.astype(np.int64)
        return pa.array(t + EPOCH_UNIX, type=ts, mask=t == 0)
    if f.kind == "alarm_mask":
        return _alarm_list_array(x)
    if f.kind in ("code", "drug_id"):
        u, inv = np.unique(x, return_inverse=True)
        name = (lambda c: F.code_name(f, c)) if f.kind == "code" else r.drug_name
        return pa.array(np.array([name(c) for c in u.tolist()], dtype=object)[inv],
                        type=pa.string())
    return pa.array(x)


class _Gathered:
    """A log's frames split for Parquet: status columns, other frames' rows, and where
    each DEVICE_INFO (its serial) begins; positions are frame numbers in the file."""

    def __init__(self) -> None:
        self.st_cols: list[dict] = []
        self.st_pos: list[np.ndarray] = []
        self.rows: list[dict] = []
        self.row_pos: list[int] = []
        self.info_pos: list[int] = []
        self.info_serial: list[str] = []

    def serial_at(self, pos: np.ndarray) -> np.ndarray:
        """The serial of the DEVICE_INFO in force at each position (the first before it)."""
        ipos = np.asarray(self.info_pos, dtype=np.int64)
        if not len(ipos):
            return np.full(len(pos), None, dtype=object)
        iser = np.array(self.info_serial, dtype=object)
        return iser[np.maximum(np.searchsorted(ipos, pos, side="right") - 1, 0)]


def _gather(t: Tlog, summary: Summary, sel: Selection, schema, r: Renderer) -> _Gathered:
    a, data = summary.a, t.data
    g = _Gathered()
    base = 0
    for b in t.batches():
        starts, lens = b.starts, b.lengths
        kinds = frame_kinds(a, starts, lens)
        for i in np.flatnonzero(kinds == K_INFO).tolist():
            g.info_pos.append(base + i)
            g.info_serial.append(
                r.info_fields(L.INFO.unpack_from(data, int(starts[i]) + L.HDR_SIZE))["serial"])
        if sel.active:
            m, in_time, _ = sel.apply(a, starts, lens)
            summary.add(starts[m], lens[m], starts[in_time])
        else:
            m = np.ones(len(starts), dtype=bool)
            summary.add(starts, lens)
        stm = m & (kinds == K_STATUS)
        if stm.any():
            g.st_cols.append(status_columns(a, starts[stm]))
            g.st_pos.append(np.flatnonzero(stm) + base)
        other = np.flatnonzero(m & (kinds != K_STATUS))
        if len(other):
            tm = frame_times(a, starts[other], kinds[other]).tolist()
            for i, tt in zip(other.tolist(), tm, strict=True):
                s, n = int(starts[i]), int(lens[i])
                g.rows.append(_parquet_row(r.record(data[s : s + n]), tt + EPOCH_UNIX, schema, r))
                g.row_pos.append(base + i)
        base += len(starts)
    summary.anomalies = list(t.anomalies)
    return g


def _table(g: _Gathered, schema, r: Renderer):
    # one table in file order: the status columns and the other rows, merged
    import pyarrow as pa

    tables, order = [], []
    if g.st_cols:
        col = {k: np.concatenate([c[k] for c in g.st_cols]) for k in g.st_cols[0]}
        pos = np.concatenate(g.st_pos)
        tables.append(_status_table(col, g.serial_at(pos), schema, r))
        order.append(pos)
    if g.rows:
        pos = np.asarray(g.row_pos, dtype=np.int64)
        for row, sv in zip(g.rows, g.serial_at(pos).tolist(), strict=True):
            if sv is not None:
                row["serial"] = sv
        tables.append(pa.Table.from_pylist(g.rows, schema=schema))
        order.append(pos)
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables)
    return table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))


def write_parquet(t: Tlog, path, summary: Summary, sel: Selection | None = None) -> int:
    """Write every (selected) frame of `t` as one Parquet row; returns the number of rows.

    STATUS frames (nearly all of a log) are converted column-wise; other frames
    through `Renderer.record`. `serial` comes from the DEVICE_INFO in force at
    each frame (the first one for frames before it), whatever the filter.
    """
    import pyarrow.parquet as pq

    r = Renderer()
    schema = parquet_schema()
    sel = sel if sel is not None else Selection()
    table = _table(_gather(t, summary, sel, schema, r), schema, r)
    meta = {
        b"theca.source": str(t.path).encode(),
        b"theca.log_schema": f"0x{t.header.schema:08x}".encode(),
        b"theca.decoder_schema": f"0x{tp.SCHEMA:08x}".encode(),
    }
    if sel.active:
        meta[b"theca.filter"] = sel.describe().encode()
    table = table.replace_schema_metadata(meta)
    pq.write_table(table, path, compression="zstd")
    return table.num_rows




WRITER = Writer(
    "parquet", "parquet (one typed row per frame, with the device serial; needs -o)", True,
    write_parquet,
)
