# Two commands for a newcomer: `make run` (the viewer) and `make test` (the tests).
# Both create .venv with Python 3.11 on first use and install the project into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test test-all setup models clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# app/qtdeps.py first checks there is a display (else says in one line how to run the viewer:
# desktop, ssh -X, xvfb-run make run, or ARGS="PATH --screenshot FILE.png"); then Qt's X11
# platform plugin's system libraries with ldd and, on Debian/Ubuntu as root, installs the
# missing ones with apt-get (otherwise prints the command).
run: $(VENV)/.installed
	$(PY) -m app.qtdeps -- $(ARGS)
	$(VENV)/bin/mammo-viewer $(ARGS)

test: $(VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(ARGS)

# Everything, including slow tests (real-data training).
test-all: $(VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m "" $(ARGS)

models: $(VENV)/.installed
	bash training_scripts/train_bundled.sh

clean-venv:
	rm -rf $(VENV)
