# Theca: two commands set everything up on a fresh machine.
#   make demo   30-day therapy on the twin, summary printed, demo/run.tlog written
#   make test   the whole suite (firmware runs under the MicroPython unix port)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.theca-setup
BOARD  ?= rp2_pico
PORT   ?= /dev/ttyACM0

.PHONY: setup test demo bench soak lint flash clean

setup: $(STAMP)

# Idempotent: re-runs only when the pins or the package description change.
$(STAMP): requirements.txt pyproject.toml
	@command -v socat >/dev/null 2>&1 || { \
	  echo "setup: installing socat (pty tests, mpremote flash test)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq socat >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq socat >/dev/null; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

test: lint
	$(BIN)/pytest -q

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
# package; the complexity ceiling is ruff's (C901, PLR0915)
lint: setup
	$(BIN)/ruff check host_tools protocol tests bench
	$(BIN)/ruff check --config mpy.ruff.toml firmware boards tests/mp
	$(BIN)/mypy

flash: setup
	$(BIN)/theca --device $(PORT) flash --board $(BOARD)

clean:
	rm -rf $(VENV) demo build .pytest_cache .hypothesis
