# Two commands for a new machine (Debian 12):
#   make demo   set everything up and run the demo lab
#   make test   set everything up and run every test
# Both install what they need (apt packages, .venv) and start libvirtd when it is not running.

VENV    := .venv
LABVIRT := $(VENV)/bin/labvirt
PYTEST  := $(VENV)/bin/pytest
DEMO    := -f overrides/glance-dcn.yml -f overrides/tiny.yml

.PHONY: setup demo test unit lint golden bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(LABVIRT) $(DEMO) image tiny
	$(LABVIRT) $(DEMO) up
	$(LABVIRT) $(DEMO) inventory
	$(LABVIRT) $(DEMO) status
	@echo
	@echo "The demo lab is up. Next: $(LABVIRT) $(DEMO) snapshot create clean"
	@echo "Remove it with:          $(LABVIRT) $(DEMO) down --yes"

test: setup
	$(VENV)/bin/ruff check labvirt tests bench
	$(PYTEST) -q tests

unit: setup
	$(PYTEST) -q -m unit tests

lint: setup
	$(VENV)/bin/ruff check labvirt tests bench

# Regenerate golden files after an intended change; review `git diff tests/golden` before committing.
golden: setup
	LABVIRT_REGEN_GOLDEN=1 $(PYTEST) -q tests -k golden
	git --no-pager diff --stat -- tests/golden

# Benchmarks print numbers; each brings up and removes its own copy of the demo lab.
bench: setup
	$(LABVIRT) image tiny
	$(VENV)/bin/python bench/up_ready.py
	$(VENV)/bin/python bench/snapshots.py
