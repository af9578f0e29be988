# Two commands for a fresh machine with Python >= 3.10 and pip:
#   make demo   sets up .venv and runs the main job on the embedded synthetic faces
#   make test   sets up .venv and runs the whole test suite (unit tests + notebooks via nbval)
# Both are safe to run twice: .venv is refreshed only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fervis-installed
export FERVIS_HOME ?= $(CURDIR)/.fervis
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test unit notebooks bench gallery clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/fervis demo

# Two pytest runs: the unit tests cap iterative methods (FERVIS_MAX_STEPS in tests/conftest.py),
# and that cap must not reach the notebook kernels, whose stored outputs ran without it.
test: unit notebooks

unit: venv
	$(BIN)/python -m pytest tests -p no:cacheprovider

notebooks: venv
	env -u FERVIS_MAX_STEPS $(BIN)/python -m pytest notebooks --nbval --nbval-cell-timeout=600 --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider

bench: venv
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .fervis reports

# README's gallery: every notebook on FER2013 with the shipped model (--budget full), then the
# tagged figures to docs/gallery/ and the region-share table into README.md.
FER2013 ?= ../shared/data/fer2013.csv.gz
gallery: venv
	$(BIN)/python scripts/make_gallery.py --data $(FER2013)
