# Freezes Theca into a custom MicroPython firmware for the Raspberry Pi Pico (RP2040):
#
#   make -C ports/rp2 BOARD=RPI_PICO FROZEN_MANIFEST=/abs/path/to/theca/boards/rp2_pico/manifest.py
#
# (step by step: docs/hardware.md, "A frozen build"). MicroPython's build runs this file
# with its manifest functions; relative paths are from this file's directory.
#
# Frozen modules are bytecode in flash: they cost no RAM for their code and cannot be
# changed or deleted from the filesystem. main.py is frozen too, so the firmware starts
# at every boot (a frozen main.py runs before one on the filesystem); the way back to
# the REPL is MAINTENANCE or holding BOOTSEL (docs/hardware.md, "Bring-up").
#
# Not freezable: firmware/druglib.json is data, not a module. It lives on the littlefs2
# filesystem at /druglib.json, next to /provision.json; `theca flash` writes both, and a
# deployment can replace the library without rebuilding.

# The port's own frozen modules (asyncio, rp2's PIO assembler, ...).
include("$(PORT_DIR)/boards/manifest.py")

# Every firmware module (firmware/*.py). Default optimisation: line numbers stay, so a
# fault's traceback (/fault.txt) points at the line.
import os as _os

for _f in sorted(_os.listdir("../../firmware")):
    if _f.endswith(".py"):
        module(_f, base_path="../../firmware")

# The board: its build() and pin map, and the support shared by the real boards.
module("board.py")
module("pins.py")
module("hal.py", base_path="../common")
module("motor.py", base_path="../common")
