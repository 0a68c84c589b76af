# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install the project into it (CPU torch pinned by constraints-cpu.txt).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2

.PHONY: install test demo lint bench clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[dev,robot,calib,vlm]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/vlaloop demo

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/vlaloop bench all

clean:
	rm -rf $(VENV) runs .pytest_cache
