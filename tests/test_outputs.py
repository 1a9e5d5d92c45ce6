"""Outputs never destroy inputs, never go through links, never appear half written (issue 23,
"Outputs"), and every command makes a missing parent folder (issue 25)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_decode import Log, run_cli, write
from theca.cli import main as cli_main
from theca.errors import BadInput
from theca.outputs import atomic_open, output_file

T0 = 189388800


def _log(tmp_path: Path) -> Path:
    lg = Log()
    lg.info(T0)
    for i in range(20):
        lg.status(T0 + 60 * i)
    return write(tmp_path, lg.tlog())


def test_decode_onto_its_own_log_is_refused_and_the_log_kept(tmp_path, capsys):
    log = _log(tmp_path)
    before = log.read_bytes()
    link = tmp_path / "same.tlog"
    link.symlink_to(log)
    hard = tmp_path / "hard.tlog"
    os.link(log, hard)
    for out in (log, hard):
        rc, _, err = run_cli(capsys, log, "--format", "jsonl", "-o", out)
        assert rc == 2 and "is the input" in err, err
    rc, _, err = run_cli(capsys, log, "--format", "jsonl", "-o", link)
    assert rc == 2 and "symbolic link" in err, err
    assert log.read_bytes() == before


def test_outputs_are_written_whole_into_a_made_folder(tmp_path, capsys):
    log = _log(tmp_path)
    out = tmp_path / "new" / "deeper" / "run.csv"
    rc, _, err = run_cli(capsys, log, "--format", "csv", "-o", out)
    assert rc == 0, err
    assert out.read_text().count("\n") >= 20
    assert not [p for p in out.parent.iterdir() if p.name.endswith((".part", ".part.csv"))]


def test_a_failed_write_leaves_what_was_there_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("the old content")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half")
        raise RuntimeError("the writer died")
    assert target.read_text() == "the old content"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_report_never_writes_through_a_link_in_its_folder(tmp_path, capsys):
    log = _log(tmp_path)
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"not to be overwritten")
    out = tmp_path / "rep"
    out.mkdir()
    (out / "reservoir.png").symlink_to(outside)
    (out / "index.html").symlink_to(outside)
    assert cli_main(["report", str(log), "-o", str(out)]) == 0, capsys.readouterr().err
    assert outside.read_bytes() == b"not to be overwritten"
    for name in ("reservoir.png", "index.html"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 100
    # the folder itself named through a link is refused
    link = tmp_path / "replink"
    link.symlink_to(out)
    assert cli_main(["report", str(log), "-o", str(link)]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_output_file_names_the_problem(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(BadInput, match="is a folder"):
        output_file(tmp_path / "d")
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(BadInput, match="cannot make the folder"):
        output_file(f / "under" / "out.csv")


def test_a_crafted_log_s_time_span_is_refused_fast(tmp_path, capsys):
    # two frames 130 years apart made `report` take 89 s and 1.15 GB (issue 23)
    lg = Log()
    lg.info(T0)
    lg.status(T0)
    lg.status(2**32 - 100)
    lg.status(T0 + 60)
    log = write(tmp_path, lg.tlog())
    assert cli_main(["report", str(log), "-o", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "47518 days" in err and "more than the 3660 days" in err
