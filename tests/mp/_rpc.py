# MicroPython side of tests/mphost.py MPWorker: JSON lines in, JSON lines out.
import io
import json
import sys

_mods = {}


def _serve():
    stdin = sys.stdin
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        try:
            mod = _mods.get(req["mod"])
            if mod is None:
                mod = __import__(req["mod"])
                _mods[req["mod"]] = mod
            res = getattr(mod, req["fn"])(*req["args"])
            out = json.dumps({"result": res})
        except Exception as e:  # report every failure to the host, keep serving
            s = io.StringIO()
            sys.print_exception(e, s)
            out = json.dumps({"error": s.getvalue()})
        sys.stdout.write(out)
        sys.stdout.write("\n")


_serve()
