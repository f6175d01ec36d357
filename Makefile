# The two commands of the README:
#   make lab   - set everything up, then run the default lab (etc/lab.toml)
#   make test  - set everything up, then run every test, the type checker and the linter
# Only python3 (with its venv module), make and git are needed; nothing is
# installed outside .venv/ and no virtualenv needs to be activated.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test setup check lint typecheck clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip "setuptools>=68" wheel
	# Editable in "compat" mode: the repository itself goes on sys.path, so twistd
	# finds twisted/plugins/exchange_emu_plugins.py here (a PEP 660 finder hides it).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--config-settings editable_mode=compat -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

lab: $(STAMP)
	$(BIN)/exchange-emu lab --config etc/lab.toml

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest --durations=15

lint: $(STAMP)
	$(BIN)/ruff check exchange_emu twisted tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info twisted/plugins/dropin.cache
