"""One host per port (issue 23): a second host on a port another holds gets "port busy",
exit 4, instead of reading the first one's replies."""

from __future__ import annotations

import os
import pty

from theca.cli import main as cli_main
from theca.link import keys as K
from theca.link.client import Link


def test_a_second_host_on_a_busy_port_is_told_and_exits_4(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("THECA_HOME", str(tmp_path))
    K.store_keys("PUMP01", {"clinician": b"\x11" * 32, "patient": b"\x22" * 32})
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    first = Link(name)
    try:
        assert cli_main(["--device", name, "status"]) == 4
        err = capsys.readouterr().err
        assert "port busy" in err and name in err
    finally:
        first.close()
        os.close(master)
        os.close(slave)
