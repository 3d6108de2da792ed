# Every target sets up a fresh machine from nothing: a virtual environment,
# torch 2.13.0 first (the CPU wheel on this machine's disk), then the project.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dmstore demo demo-out

# the type check (one core, ~7 s from a fresh clone) runs beside the tests, in the time their workers leave a core idle;
# its report follows theirs, and either failing fails the target.
# Python caches bytecode for the tests' own processes, as it does by default: where the environment says not to
# (PYTHONDONTWRITEBYTECODE=1, as on this project's machines), each of the 130-odd processes the suite starts
# compiled dmstore's modules again, and each pytest process rewrote the asserts of zarr's and hypothesis's
# (their pytest plugins). An empty value is Python's default.
test: export PYTHONDONTWRITEBYTECODE :=
test: $(STAMP)
	$(BIN)/ruff check .
	@$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & types=$$!; \
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=30; tests=$$?; \
	wait $$types; typed=$$?; echo "mypy:"; cat $(VENV)/mypy.log; test $$tests -eq 0 && test $$typed -eq 0

clean:
	rm -rf $(VENV) demo-out bench-out
