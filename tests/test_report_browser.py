"""The report as a browser lays it out (issue 25): `make demo`'s report opened in headless
Chromium (Debian's, which `make setup` installs) in a 1280 px window: the page does not
run past it, every picture loads, every table column has a heading, and the trumpet
section is a curve, not an error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# measured in the page by the browser itself, then read back from the DOM it dumps
PROBE = """<script>
window.addEventListener('load', function(){
  var b = document.body, empty = 0, broken = 0;
  document.querySelectorAll('th').forEach(function(t){ if (!t.textContent.trim()) empty++; });
  document.querySelectorAll('img').forEach(function(i){ if (!i.complete || !i.naturalWidth) broken++; });
  b.setAttribute('data-probe', JSON.stringify({width: document.documentElement.scrollWidth,
    window: window.innerWidth, empty_th: empty, broken_img: broken,
    imgs: document.querySelectorAll('img').length,
    tables: document.querySelectorAll('table').length}));
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium not found: `make setup` installs Debian's")
    pytest.skip("chromium not found (`make setup` installs Debian's): the report's layout is "
                "not checked in a browser")


def test_the_demo_report_fits_a_1280_px_window_with_every_column_headed(tmp_path):
    browser = _chromium()
    tlog = tmp_path / "run.tlog"
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate", ROOT / "examples" / "demo.toml",
                        "-o", tlog, "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "theca.cli", "report", tlog, "-o", tmp_path / "rep"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "rep" / "index.html").read_text()
    # the trumpet section draws a curve (the demo samples every 30 s, as the standard does)
    trumpet = page[page.find("Trumpet"):]
    assert "Ep(max)" in trumpet and "class='bad'" not in trumpet[:2000], trumpet[:600]
    probe = tmp_path / "rep" / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    out = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                          "--window-size=1280,900", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r'data-probe="([^"]*)"', out.stdout)
    assert m, out.stdout[-500:] + out.stderr[-500:]
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["window"] <= 1280 and got["width"] <= 1280, got  # nothing runs past the window
    assert got["imgs"] >= 4 and got["broken_img"] == 0, got
    assert got["tables"] >= 5 and got["empty_th"] == 0, got
