"""The real boards (boards/rp2_pico, boards/esp32) from the host side.

Their behaviour on fake hardware is tested under MicroPython in
tests/mp/mptest_board_rp2.py and mptest_board_esp32.py. Here: firmware/ stays free of
hardware modules, each board's manifest.py freezes exactly what the board runs, the pin
maps agree with docs/hardware.md, the .mpy sizes and the RAM the board keeps, and
`make flash`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from mphost import ROOT, micropython_exe
from theca.board import build

BOARDS = ("rp2_pico", "esp32")
HARDWARE_MODULES = {"machine", "rp2", "esp32", "esp", "pyb", "network", "bluetooth", "neopixel"}
DOC = ROOT / "docs" / "hardware.md"


# -- firmware/ is hardware-free ------------------------------------------------------------


def _hardware_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__" and node.args
              and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        for n in names:
            if n.split(".")[0] in HARDWARE_MODULES:
                found.append(f"{path.name}:{node.lineno}: {n}")
    return found


def test_firmware_imports_no_hardware_module():
    files = sorted((ROOT / "firmware").glob("*.py"))
    assert files
    bad = [hit for f in files for hit in _hardware_imports(f)]
    assert bad == [], "firmware/ must reach hardware only through board.build(): " + ", ".join(bad)


def test_the_hardware_import_check_catches_one(tmp_path: Path):
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom machine import Pin\nimport rp2.asm\nm = __import__('esp32')\n")
    assert [h.split(": ")[1] for h in _hardware_imports(f)] == ["machine", "rp2.asm", "esp32"]


# -- manifest.py ---------------------------------------------------------------------------


class _Manifest:
    """The part of MicroPython's tools/manifestfile.py a manifest may use: runs the
    file with include/module/package/require/freeze/metadata as its globals, relative
    paths resolved from the manifest's own directory, and records what is frozen."""

    def __init__(self, path_vars: dict[str, str]):
        self.vars = path_vars
        self.frozen: dict[str, Path] = {}
        self.includes: list[str] = []

    def _resolve(self, p: str) -> Path:
        for k, v in self.vars.items():
            p = p.replace(f"$({k})", v)
        return Path(os.path.abspath(p))

    def _add(self, full: Path, target: str):
        if not full.is_file():
            raise FileNotFoundError(f"manifest names {full}, which does not exist")
        if target in self.frozen:
            raise ValueError(f"{target} frozen twice")
        self.frozen[target] = full

    def module(self, module_path, base_path=".", opt=None):
        if not module_path.endswith(".py"):
            raise ValueError(f"module() needs a .py file: {module_path}")
        self._add(self._resolve(base_path) / module_path, module_path)

    def package(self, package_path, files=None, base_path=".", opt=None):
        base = self._resolve(base_path)
        for f in files or [p.relative_to(base / package_path).as_posix()
                           for p in (base / package_path).rglob("*.py")]:
            self._add(base / package_path / f, f"{package_path}/{f}")

    def include(self, manifest_path, **kwargs):
        self.includes.append(manifest_path)
        if "$(PORT_DIR)" in manifest_path or "$(MPY_DIR)" in manifest_path:
            return  # MicroPython's own manifests: not here
        self.run(self._resolve(manifest_path))

    def require(self, name, **kwargs):
        self.includes.append(f"require:{name}")

    def freeze(self, path, script=None, opt=None):
        raise AssertionError("freeze() is the legacy form: use module()/package()")

    def metadata(self, **kwargs):
        pass

    def run(self, path: Path):
        g = {"include": self.include, "module": self.module, "package": self.package,
             "require": self.require, "freeze": self.freeze, "metadata": self.metadata}
        prev = os.getcwd()
        os.chdir(path.parent)
        try:
            exec(compile(path.read_text(), str(path), "exec"), g)
        finally:
            os.chdir(prev)


@pytest.mark.parametrize("board", BOARDS)
def test_manifest_freezes_what_the_board_runs(board):
    m = _Manifest({"PORT_DIR": "/nonexistent/ports/x", "MPY_DIR": "/nonexistent"})
    m.run(ROOT / "boards" / board / "manifest.py")
    # the port's default manifest first (asyncio and the port's modules)
    assert m.includes[:1] == ["$(PORT_DIR)/boards/manifest.py"]
    frozen = {p.resolve() for p in m.frozen.values()}
    # exactly the files `theca flash` would copy (build.sources): every firmware
    # module, the board's own modules and boards/common
    assert frozen == {p.resolve() for p in build.sources(board)}
    names = set(m.frozen)
    assert {"main.py", "pump.py", "board.py", "pins.py", "hal.py"} <= names
    assert "manifest.py" not in names
    fw = {p.name for p in (ROOT / "firmware").glob("*.py")}
    assert fw <= names
    # data is not frozen: the drug library stays a file next to provision.json
    assert not any(n.endswith(".json") for n in names)


# -- pin maps and the documentation ---------------------------------------------------------


def _literal(path: Path, name: str):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def _doc_wiring(title: str) -> dict[str, int]:
    """The `| \\`key\\` | GPn |` rows of the wiring table under the heading `title`."""
    text = DOC.read_text()
    start = text.index(title)
    end = text.find("\n#", start + len(title))
    rows = {}
    for line in text[start : end if end > 0 else None].splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|\s*(?:GP|GPIO)?(\d+)\b", line)
        if m:
            rows[m.group(1)] = int(m.group(2))
    return rows


@pytest.mark.parametrize(("board", "title"), [("rp2_pico", "### Raspberry Pi Pico wiring"),
                                              ("esp32", "### ESP32 wiring")])
def test_pin_map_matches_the_docs(board, title):
    pins = _literal(ROOT / "boards" / board / "pins.py", "PINS")
    assert _doc_wiring(title) == pins


@pytest.mark.parametrize("board", BOARDS)
def test_pins_are_plain_data(board):
    tree = ast.parse((ROOT / "boards" / board / "pins.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        assert isinstance(node, ast.Assign), f"pins.py line {node.lineno}: only assignments"
        ast.literal_eval(node.value)  # no calls, no imports: plain data


def test_docs_warn_not_for_people():
    head = "\n".join(DOC.read_text().splitlines()[:15])
    assert "Not for use in people" in head


# -- size and RAM -----------------------------------------------------------------------------


@pytest.mark.parametrize("board", BOARDS)
def test_mpy_size_per_board(board, tmp_path: Path):
    out = build.compile_firmware(board, tmp_path)
    mpys = sorted(out.glob("*.mpy"))
    compiled = [p for p in build.sources(board) if p.name not in build.KEEP_SOURCE]
    assert [p.stem for p in mpys] == sorted(p.stem for p in compiled)
    total = sum(p.stat().st_size for p in mpys)
    # The Pico has 2 MB of flash: MicroPython takes ~0.6 MB, littlefs2 the rest. The
    # whole firmware is a few tens of kilobytes; this bound is a tripwire, not a limit.
    assert total < 96 * 1024, f"{board}: {total} bytes of .mpy"


def _compile_x64(src: Path, out: Path):
    r = subprocess.run([build.mpy_cross(), "-march=x64", "-o", str(out / (src.stem + ".mpy")),
                        "-s", src.name, str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_board_heap_from_mpy(tmp_path: Path):
    """main.main() on the rp2 board over the fakes, all from .mpy, six virtual hours:
    the live heap other than the fake hardware stays below 186 KiB (a Pico's MicroPython
    heap is ~190 KiB; a frozen build also moves the ~50 KB of bytecode and the qstr pools
    out of RAM). A tripwire, not a target: the reply MAC, freshness and the log's guards
    (issue 12) added ~5 KB of bytecode and their names pushed the qstr table into a new
    pool (~14 KB at once); issue 15 owns the board's heap. Issue 22 moved it from 176 to
    186 KiB (183 measured): on the unix port native code lives outside the GC heap, so
    the ~25 functions it turned from native into bytecode (their frames fit the C stack)
    now count here, while on the Pico, where native code is in the heap, the same change freed memory
    (make bench: 134,912 bytes free after boot, was 134,080). Issues 23 and 24 moved it to
    192 KiB (190.2 measured, was 185.3): the flash-fault path, the event log's late writes,
    the damage bookkeeping, the audio pause, the local day of each timed bolus, the time
    zone's part and the refill date's battery (the boot-only reads, restore and the
    witnesses leave the heap after the boot; MRI and a time zone's changes load only when
    used). On the emulated Pico: 130,288 bytes free after boot (was 134,032), 129,488 at the
    least in a day of therapy, 53 % of its heap. Issue 24's admixtures moved it to 196 KiB
    (194.0 measured): the fill's other drugs in the plan, the refill and the snapshot (the
    admixture's rules, mix.py, load only for a fill that has one); the emulated Pico: 128,928
    bytes free after boot, 128,080 at the least in a day (52 %). The Pico's figure is the
    requirement; this one only catches growth."""
    files = list(build.sources("rp2_pico"))
    files += [p for p in (ROOT / "tests" / "mp" / "fake_machine").glob("*.py") if p.name != "heapcheck.py"]
    files.append(ROOT / "tests" / "mp" / "fakehw.py")
    for f in files:
        _compile_x64(f, tmp_path)
    proc = subprocess.run(
        [micropython_exe(), "-X", "heapsize=288k",
         str(ROOT / "tests" / "mp" / "fake_machine" / "heapcheck.py"), str(tmp_path),
         str(tmp_path / "flash.bin")],
        env=dict(os.environ, MICROPYPATH=".frozen"), cwd=ROOT, capture_output=True, timeout=120,
    )
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
    assert lines, proc.stdout.decode()[-2000:] + proc.stderr.decode()[-2000:]
    r = json.loads(lines[-1])
    assert r["board_file"].endswith("board.mpy")
    assert r["bites"] == 0
    # SET_TIME, PROGRAM, 5 patient boluses (the 5th over max_per_day: NACK limit), status, MAINTENANCE
    assert [tuple(x) for x in r["replies"]] == [(0x49, 0), (0x41, 0), (0x44, 0), (0x44, 0), (0x44, 0),
                                               (0x44, 0), (0x44, 6), (0x40, 0), (0x4C, 0)]
    assert r["peak"] - r["fakes"] < 196 * 1024, r


# -- make flash ---------------------------------------------------------------------------------


def test_make_flash_calls_theca_flash():
    r = subprocess.run(["make", "-n", "flash", "BOARD=rp2_pico", "PORT=/dev/ttyACM0"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ".venv/bin/theca --device /dev/ttyACM0 flash --board rp2_pico" in r.stdout
