# The kit's task runner. Two commands matter on a fresh machine:
#   make workshop   create the environment, prepare caches, check the device, open JupyterLab
#   make test       create the environment and run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# TensorFlow flavour: the gpu extra when an NVIDIA driver answers, else cpu (see pyproject.toml).
TF_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
PORT ?= 8888
# Test workers: one more than the cores (2 here), since many tests wait on kernels, servers and browsers;
# each test file stays on one worker (its module fixtures, a graded class or a hub, are built once).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
INSTRUCTOR_PORT ?= 8889
STAMP := $(VENV)/.installed-$(TF_EXTRA)
# `tensorflow` and `tensorflow-cpu` install the same import package: switching an existing
# environment to the other flavour removes the one it no longer wants first. The cpu extra
# is `tensorflow-cpu` only on Linux x86_64 (plain `tensorflow` elsewhere, nothing to remove).
TF_UNWANTED := $(if $(filter gpu,$(TF_EXTRA)),tensorflow-cpu,$(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),tensorflow,))

.PHONY: workshop instructor bundle test lint setup prepare check generate validate autograde export feedback slides figures benchmarks clean help

help:
	@echo "make workshop   set up, prepare, check, then launch JupyterLab on notebooks/ (PORT=$(PORT))"
	@echo "make test       set up, then run every test"
	@echo "make lint       ruff check (the rules are in pyproject.toml)"
	@echo "make instructor launch the instructor's JupyterLab on the course folder (formgrader ready; INSTRUCTOR_PORT=8889)"
	@echo "make bundle     build dist/ the zip students receive (notebooks, helpers, environment; no solutions)"
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
	$(if $(TF_UNWANTED),$(BIN)/python -m pip uninstall --quiet --yes $(TF_UNWANTED) 2>&1 | grep -v "^WARNING: Skipping" || true,)
	$(BIN)/python -m pip install --quiet -e ".[$(TF_EXTRA),dev,instructor]"
	$(BIN)/python -m helpers kernel
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

workshop: setup
	$(BIN)/python -m helpers workshop --port $(PORT)

instructor: setup
	$(BIN)/python -m instructor_tools instructor --port $(INSTRUCTOR_PORT)

bundle: setup
	$(BIN)/python -m instructor_tools bundle

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(BIN)/ruff check .

prepare: setup
	$(BIN)/python -m helpers prepare

check: setup
	$(BIN)/python -m helpers check

generate: setup
	$(BIN)/python -m instructor_tools generate

validate: setup
	$(BIN)/python -m instructor_tools validate

autograde: setup
	$(BIN)/python -m instructor_tools autograde $(SUBMISSIONS)

export: setup
	$(BIN)/python -m instructor_tools export

feedback: setup
	$(BIN)/python -m instructor_tools feedback

slides: setup
	$(BIN)/python slides/build.py

figures: setup
	$(BIN)/python slides/figures.py

benchmarks: setup
	$(BIN)/python -m benchmarks --size full

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
