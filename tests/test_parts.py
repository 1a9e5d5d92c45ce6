"""The pump's parts own their state (issue 22): no firmware module assigns an attribute of
another object (`p.reservoir_nl = ...`, `self.plan.rx = ...`, `g.starts[:] = ...`): it
calls the owner's method. And no code outside protocol/ writes a struct layout of its own:
layouts come from the protocol definition (msgdefs on the device, construct on the host).

Each checker is first shown a breach of its rule, so a checker that cannot fail fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = sorted((ROOT / "firmware").glob("*.py"))
# the product's code outside protocol/ (tests build frames by hand on purpose)
PRODUCT = [*FIRMWARE, *(ROOT / "boards").rglob("*.py"), *(ROOT / "host_tools").rglob("*.py"),
           *(ROOT / "bench").glob("*.py")]
STRUCT_CALLS = {"pack", "pack_into", "unpack", "unpack_from", "calcsize", "iter_unpack",
                "Struct"}


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        out: list[ast.expr] = []
        for t in node.targets:
            out.extend(t.elts if isinstance(t, ast.Tuple | ast.List) else [t])
        return out
    if isinstance(node, ast.AugAssign | ast.AnnAssign):
        return [node.target]
    return []


# The shell's tasks share one small blackboard (main.py's _Shared, as in Peter Hinch's
# micropython-async): it is the shell's, not a part of the pump.
SHARED = {"main.py": {"sh"}}


def _made_here(fn: ast.AST) -> set[str]:
    # names a function binds to an object it makes (x = Rx()): it may fill that in
    return {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign)
            and isinstance(n.value, ast.Call) for t in n.targets if isinstance(t, ast.Name)}


def foreign_writes(source: str, name: str = "<src>") -> list[str]:
    """Assignments whose target is state of another object than `self` (or of a part
    of self's: `self.plan.x`), and `setattr` calls outside part.py."""
    out = []
    tree = ast.parse(source)
    fns = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    for fn in fns:
        own = _made_here(fn) | {"self"} | SHARED.get(name, set())
        for node in ast.walk(fn):
            for t in _targets(node):
                while isinstance(t, ast.Subscript):
                    t = t.value  # self.b[i] = ... writes self's array
                if not isinstance(t, ast.Attribute):
                    continue  # a local name
                if isinstance(t.value, ast.Name) and t.value.id in own:
                    continue
                out.append(f"{name}:{t.lineno}: {ast.unparse(t)}")
    for node in ast.walk(tree):
        if (name != "part.py" and isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name) and node.func.id == "setattr"):
            out.append(f"{name}:{node.lineno}: setattr")
    return out


def literal_layouts(source: str, name: str = "<src>") -> list[str]:
    """struct calls whose layout is a string written in place."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in STRUCT_CALLS and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("struct", "ustruct")):
            continue
        if node.args and isinstance(node.args[0], ast.Constant) and isinstance(
                node.args[0].value, str | bytes):
            out.append(f"{name}:{node.lineno}: {ast.unparse(node)[:60]}")
    return out


def test_the_checkers_see_a_breach():
    assert foreign_writes("def f(p):\n    p.reservoir_nl = 0\n")
    assert foreign_writes("class A:\n    def f(self):\n        self.plan.rx = None\n")
    assert foreign_writes("def f(p):\n    g = p.gate\n    g.starts[:] = b''\n")
    assert foreign_writes("def f(p):\n    p.a, x = 1, 2\n")
    assert foreign_writes("def f(p):\n    setattr(p, 'mode', 1)\n")
    assert foreign_writes("def f(p):\n    rx = p.plan.rx\n    rx.drug = 2\n")
    assert not foreign_writes("def f(b):\n    rx = Rx()\n    rx.drug = b[0]\n")
    assert not foreign_writes("class A:\n    def f(self, v):\n        self.b[0] = v\n"
                              "        self.n += 1\n        x = v\n        x[1] = 2\n")
    assert literal_layouts("import struct\nstruct.pack('<I', 1)\n")
    assert not literal_layouts("import struct\nimport msgdefs as md\n"
                               "struct.pack(md.SNAP_FMT, 1)\n")


def test_no_firmware_module_assigns_another_parts_state():
    bad = []
    for f in FIRMWARE:
        bad += foreign_writes(f.read_text(), f.name)
    assert not bad, "state written from outside its owner (call its method):\n" + "\n".join(bad)


# The protocol's own cross-checks: they write layouts by hand on purpose, as an
# independent second reading of the definition (and the x64 frame of a vector).
_CROSS_CHECKS = {"test_protocol.py", "test_one_definition.py", "mptest_codec.py",
                 "test_parts.py"}


def test_no_struct_layout_is_written_outside_protocol():
    tests = [f for f in (ROOT / "tests").rglob("*.py") if f.name not in _CROSS_CHECKS]
    bad = []
    for f in PRODUCT + tests:
        bad += literal_layouts(f.read_text(), str(f.relative_to(ROOT)))
    assert not bad, "layouts belong in protocol/ (msgdefs, construct):\n" + "\n".join(bad)


def test_commands_are_one_table_by_reference():
    # no handler found by a name string: grep and the type checker follow every command
    src = (ROOT / "firmware" / "commands.py").read_text()
    tree = ast.parse(src)
    calls = {n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"getattr", "__import__"}
    table = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "HANDLERS" for t in n.targets))
    assert isinstance(table.value, ast.Dict)
    for v in table.value.values:
        assert isinstance(v, ast.Name | ast.Call), ast.unparse(v)


def test_no_module_over_600_lines_and_no_function_of_60():
    # rooms by concern stay readable: a module holds one idea, a function one step
    big, long_fns = [], []
    for f in PRODUCT + list((ROOT / "protocol").rglob("*.py")):
        text = f.read_text()
        name = str(f.relative_to(ROOT))
        if f.name == "msgdefs.py":
            continue  # generated: one definition a line
        if text.count("\n") > 600:
            big.append(name)
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and \
                    n.end_lineno - n.lineno + 1 >= 60:
                long_fns.append(f"{name}:{n.lineno} {n.name}")
    assert not big and not long_fns, (big, long_fns)


def test_no_host_module_takes_another_s_private_names():
    # a name with a leading underscore is its module's own (issue 22: writers took each
    # other's `_EPOCH`, `_H`, `_iso_many`...): shared things have public names
    bad = []
    for f in (ROOT / "host_tools").rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("theca"):
                bad += [f"{f.relative_to(ROOT)}: {n.module}.{a.name}" for a in n.names
                        if a.name.startswith("_")]
    assert not bad, bad


def test_the_pump_keeps_the_modes_and_the_tick_under_400_lines():
    n = (ROOT / "firmware" / "pump.py").read_text().count("\n")
    assert n < 400, f"pump.py has {n} lines: a concern that grew there has a part of its own"


def _unrouted_prints(source: str, name: str) -> list[str]:
    # print() or print_exception() without a file: they go to stdout, which on a board (and
    # the live twin) is the binary link
    bad = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Call):
            f = n.func
            fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if fname == "print" and not any(k.arg == "file" for k in n.keywords):
                bad.append(f"{name}:{n.lineno} print")
            if fname == "print_exception" and len(n.args) < 2:
                bad.append(f"{name}:{n.lineno} print_exception")
    return bad


def test_no_traceback_or_print_goes_onto_the_binary_link():
    # REQ: SR-LINK-02
    bad = []
    for f in [*FIRMWARE, *(ROOT / "boards").rglob("*.py")]:
        bad += _unrouted_prints(f.read_text(), str(f.relative_to(ROOT)))
    assert not bad, "stdout is the link on a board: write to hw.console (main.report):\n" + "\n".join(bad)
    # and the check bites: the old main.py's bare print_exception is found
    assert _unrouted_prints("import sys\nsys.print_exception(e)\n", "x") == ["x:2 print_exception"]
