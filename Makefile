# The kit's task runner. Two commands matter on a fresh machine:
#   make workshop   create the environment, prepare caches, check the device, open JupyterLab
#   make test       create the environment and run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# TensorFlow flavour: the gpu extra when an NVIDIA driver answers, else cpu (see pyproject.toml).
TF_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
PORT ?= 8888
STAMP := $(VENV)/.installed-$(TF_EXTRA)

.PHONY: workshop test setup prepare check lab generate validate autograde export feedback slides figures benchmarks clean help

help:
	@echo "make workshop   set up, prepare, check, then launch JupyterLab on notebooks/ (PORT=$(PORT))"
	@echo "make test       set up, then run every test"
	@echo "make prepare    seed the weights cache and make the datasets available"
	@echo "make check      print settings, device summary and cache status"
	@echo "make generate   regenerate notebooks/ (student versions) from solutions/"
	@echo "make validate   run every solutions notebook's tests with nbgrader"
	@echo "make autograde SUBMISSIONS=dir   grade a folder of submissions"
	@echo "make export     write grades.csv;  make feedback: feedback HTML"
	@echo "make slides     build slides/build/deck.html (one self-contained file)"
	@echo "make figures    regenerate the deck's figures from real runs of the kit"
	@echo "make benchmarks measure the kit's claims, budgets and accuracy; writes benchmarks/REPORT.md (long)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(TF_EXTRA),dev]"
	$(BIN)/python -m helpers kernel
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

workshop: setup
	$(BIN)/python -m helpers workshop --port $(PORT)

test: setup
	$(BIN)/python -m pytest

prepare: setup
	$(BIN)/python -m helpers prepare

check: setup
	$(BIN)/python -m helpers check

lab: setup
	$(BIN)/jupyter lab --notebook-dir notebooks --ServerApp.ip 127.0.0.1 --ServerApp.port $(PORT)

generate: setup
	$(BIN)/python -m helpers generate

validate: setup
	$(BIN)/python -m helpers validate

autograde: setup
	$(BIN)/python -m helpers autograde $(SUBMISSIONS)

export: setup
	$(BIN)/python -m helpers export

feedback: setup
	$(BIN)/python -m helpers feedback

slides: setup
	$(BIN)/python slides/build.py

figures: setup
	$(BIN)/python slides/figures.py

benchmarks: setup
	$(BIN)/python -m benchmarks --size full

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
