# Two commands from a fresh clone: `make demo` and `make test`.
# Each creates .venv when missing and installs the package (editable) with what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint format docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test]"
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[docs]"
	touch $@

# The user guide and the API reference (from docstrings), built offline into site/. The
# tutorials' figures are made by running the tutorials (docs/_gen/tutorial_figures.py); a page
# whose code is unchanged since its figures were made is skipped (FORCE=1 redoes every page).
docs: $(VENV)/.installed-docs
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python docs/_gen/tutorial_figures.py $(if $(FORCE),--force)
	$(BIN)/mkdocs build --strict --site-dir site

# `tmx demo`: the command line (`tmx run`) on the embedded digits and CNN, plus the demo's measures.
demo: $(VENV)/.installed-run
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/tmx demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check tmx tests benchmarks examples
	$(BIN)/ruff format --check tmx tests benchmarks examples
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix tmx tests benchmarks examples
	$(BIN)/ruff format tmx tests benchmarks examples

# Every benchmark, one after the other (never two at once on a small machine). Each prints its
# table with ratios against baselines measured in the same run; the peer baselines (DNIKit, the
# seed package, netlens, gyoza) run when their venvs exist: python -m benchmarks.introspect
# --setup-dnikit, python -m benchmarks.seed_package --setup and python -m benchmarks.flows
# --setup-gyoza create three of them (netlens: see benchmarks/attribution.py).
BENCHMARKS ?= transforms cube store measures distances bootstrap introspect seed_package memory attribution flows scale coverage
bench: $(VENV)/.installed-test
	for b in $(BENCHMARKS); do \
		echo "== benchmarks.$$b"; TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m benchmarks.$$b || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache demo-output site
