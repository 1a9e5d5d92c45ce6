# Theca: two commands set everything up on a fresh machine.
#   make demo   30-day therapy on the twin, summary printed, demo/run.tlog written
#   make test   the whole suite (firmware runs under the MicroPython unix port)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.theca-setup
BOARD  ?= rp2_pico
PORT   ?= /dev/ttyACM0
# The official port stubs of the firmware's MicroPython (v1.28): boards/ is type-checked
# against them (make lint), apart from the venv, whose CPython they would shadow.
STUBS_RP2   := micropython-rp2-rpi-pico-stubs==1.28.0.post4 micropython-stdlib-stubs==1.28.0.post6
STUBS_ESP32 := micropython-esp32-stubs==1.28.0.post4 micropython-stdlib-stubs==1.28.0.post6

.PHONY: setup test demo bench soak lint flash clean

setup: $(STAMP)

# Idempotent: re-runs only when the pins or the package description change.
$(STAMP): requirements.txt pyproject.toml host_tools/theca/emu/package-lock.json
	@command -v socat >/dev/null 2>&1 || { \
	  echo "setup: installing socat (pty tests, mpremote flash test)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq socat >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq socat >/dev/null; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "setup: installing chromium (the report's layout, checked in a real browser)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	@command -v npm >/dev/null 2>&1 || { \
	  echo "setup: installing Node.js and npm (the emulated Pico, rp2040js)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm >/dev/null; fi; }
	cd host_tools/theca/emu && npm ci --no-audit --no-fund --silent
	rm -rf build/stubs
	$(BIN)/pip install -q --disable-pip-version-check --target build/stubs/rp2_pico $(STUBS_RP2)
	$(BIN)/pip install -q --disable-pip-version-check --target build/stubs/esp32 $(STUBS_ESP32)
	touch $(STAMP)

# one worker per core, a test file's tests together (module fixtures: one twin per file)
test: lint
	$(BIN)/pytest -q -n auto --dist loadfile

demo: setup
	@mkdir -p demo
	$(BIN)/theca simulate examples/demo.toml -o demo/run.tlog

bench: setup
	$(BIN)/python bench/run.py

# The stateful dose-guard test for SOAK_MINUTES (default 10); prints the steps it ran.
SOAK_MINUTES ?= 10
soak: setup
	THECA_SOAK_MINUTES=$(SOAK_MINUTES) THECA_STATEFUL_NO_SHRINK=1 $(BIN)/pytest -q -s \
	  -p no:cacheprovider --timeout=0 tests/test_guard_stateful.py
	THECA_FLOOD_FRAMES=100000 $(BIN)/pytest -q -p no:cacheprovider --timeout=0 tests -k mptest_flood

# ruff on the host code and on the MicroPython code (its own builtins), mypy on the host
# package, pyright on the firmware and on each board against its port's official stubs
# (no call to an API the real port lacks, every part's method called as defined); the
# complexity ceiling is ruff's (C901, PLR0915)
lint: setup
	$(BIN)/ruff check host_tools protocol tests bench
	$(BIN)/ruff check --config mpy.ruff.toml firmware boards tests/mp
	$(BIN)/mypy
	$(BIN)/pyright -p pyright-firmware.json
	$(BIN)/pyright -p pyright-rp2_pico.json
	$(BIN)/pyright -p pyright-esp32.json

flash: setup
	$(BIN)/theca --device $(PORT) flash --board $(BOARD)

clean:
	rm -rf $(VENV) demo build .pytest_cache .hypothesis
