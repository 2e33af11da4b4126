# RouteNLP — the commands a newcomer runs. Each target sets itself up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SEEDS ?= 0 1 2 3 4
export ROUTENLP_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup test reproduce export clean-nbs docs lab

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate setup.py settings.ini
	# CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all]'
	touch $@

setup: $(VENV)/.installed

export: setup
	$(BIN)/nbdev_export

clean-nbs: setup
	$(BIN)/nbdev_clean

test: setup
	$(BIN)/python tools/check_generated.py
	$(BIN)/python tools/check_house.py
	$(BIN)/nbdev_test --n_workers 2
	$(BIN)/python tools/build_docs.py
	$(BIN)/python -m pytest -q tests/

# The documentation site (mkdocs-material + mkdocs-jupyter + mkdocstrings, strict) -> site/; publish: mkdocs gh-deploy
docs: setup
	$(BIN)/python tools/build_docs.py

# JupyterLab on the notebooks (the source of the package); e.g. make lab LAB_ARGS="--no-browser --port 8888"
lab: setup
	$(BIN)/jupyter lab nbs/ $(LAB_ARGS) $(if $(filter 0,$(shell id -u)),--allow-root)

reproduce: setup
	$(BIN)/python tools/reproduce.py --seeds $(SEEDS)
