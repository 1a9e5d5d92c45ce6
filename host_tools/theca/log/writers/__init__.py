"""One writer per `theca decode --format`, behind a registry that the command line reads.

To add a format: a module here with `WRITER = Writer(name, help, to_file, write)`, and its
name in `_MODULES`; `theca decode --format` offers it and its help lists it.
"""

from __future__ import annotations

import importlib

from theca.log.writers.base import Writer

# in the order `--help` lists them; the first is the default
_MODULES = ("table", "csvfile", "jsonl", "parquet")

#: name -> Writer
WRITERS: dict[str, Writer] = {
    w.name: w for w in (importlib.import_module(f"{__name__}.{m}").WRITER for m in _MODULES)
}
DEFAULT = _MODULES[0]
