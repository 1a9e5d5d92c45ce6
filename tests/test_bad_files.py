"""Damaged or crafted files on the host get a clear error naming the file, exit 2, never a
traceback (issue 23, the smaller points): a TOML file with a number of thousands of digits
or arrays nested thousands deep, a counter file that holds no counter."""

from __future__ import annotations

import pytest
from theca.cli import main as cli_main
from theca.errors import BadInput
from theca.link import keys as K


@pytest.mark.parametrize("body, words", [
    ("start = 2026-01-01T00:00:00Z\ndays = " + "9" * 5000 + "\n", ":2: a number of 5000 digits"),
    ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deep"),
])
def test_a_crafted_toml_is_exit_2_with_its_line(tmp_path, capsys, body, words):
    f = tmp_path / "crafted.toml"
    f.write_text(body)
    for argv in (["simulate", str(f), "-o", str(tmp_path / "run.tlog")],
                 ["--device", "/dev/null", "program", str(f)]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert str(f) in err and words in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["-5", "12abc", "99999999999", "٣"])
def test_a_counter_file_that_holds_no_counter_is_named_with_its_fix(tmp_path, monkeypatch,
                                                                      text):
    monkeypatch.setenv("THECA_HOME", str(tmp_path))
    path = K.counter_path("PUMP01", "clinician")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    with pytest.raises(BadInput, match="not a command counter") as e:
        K.next_counter("PUMP01", "clinician")
    assert str(path) in str(e.value) and "delete the file" in str(e.value)
    assert path.read_text() == text + "\n"  # nothing lost: the file is as it was


def test_an_empty_or_good_counter_file_counts_on(tmp_path, monkeypatch):
    monkeypatch.setenv("THECA_HOME", str(tmp_path))
    path = K.counter_path("PUMP01", "patient")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    assert K.next_counter("PUMP01", "patient") == 1
    path.write_text("41\n")
    assert K.next_counter("PUMP01", "patient") == 42
