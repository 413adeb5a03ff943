# The two commands a new user needs (see README.md):
#   make demo   install, start the gateway on its embedded local center, run a job, stop
#   make test   install everything the tests need, start the testbed, run all tests
# Beyond those, `make bench` runs the performance benchmarks (benchmarks/README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SYSTEM_PACKAGES := slurm-wlm munge openssh-server slurm-wlm-torque slurmdbd mariadb-server postgresql haproxy tcsh zsh fish chromium wrk lammps lammps-examples gromacs hpcc lmod openmpi-bin bubblewrap rsync python3-pip
SYSTEM_BINARIES := /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/sbin/sshd /usr/bin/qsub /usr/sbin/slurmdbd /usr/sbin/mariadbd /usr/sbin/haproxy /usr/bin/tcsh /usr/bin/zsh /usr/bin/fish /usr/bin/chromium /usr/bin/wrk /usr/bin/lmp /usr/bin/gmx /usr/bin/hpcc /usr/share/lmod/lmod/libexec/lmod /usr/bin/mpirun /usr/share/lammps/examples/melt /usr/bin/bwrap /usr/bin/rsync /usr/bin/pip3
# (/usr/share/lammps/examples/melt is a directory of lammps-examples: -x holds for it too.)
# The PostgreSQL server's path names its version: any installed version will do (an
# unmatched pattern stays literal in the shell's word list and counts as missing).
SYSTEM_BINARY_PATTERNS := /usr/lib/postgresql/*/bin/postgres

.PHONY: install demo test bench system-deps testbed-up testbed-down testbed-status lint schema

$(BIN)/hpcfed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/hpcfed

demo: install
	BIN=$(BIN) bash examples/demo.sh

# Debian packages for the testbed's real Slurm, PBS-dialect commands, munge, sshd, and
# slurmdbd on MariaDB (the accounting center), PostgreSQL (the gateway's shared state) and
# HAProxy (in front of gateway replicas), the scientific applications the centers publish
# through Lmod modules (LAMMPS and its examples, GROMACS, HPCC with Open MPI; tests/testbed/apps.py),
# Chromium for the dashboard's browser test, and wrk for the benchmarks' load.
system-deps:
	@missing=0; for b in $(SYSTEM_BINARIES) $(SYSTEM_BINARY_PATTERNS); do [ -x $$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make system-deps: run as root to apt-get install $(SYSTEM_PACKAGES)"; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

testbed-up: install system-deps
	$(BIN)/python -m tests.testbed up

testbed-down:
	$(BIN)/python -m tests.testbed down

testbed-status:
	$(BIN)/python -m tests.testbed status

# pytest's exit code passes through: 5 (no test collected) fails the target too.
test: install system-deps
	$(BIN)/ruff check gateway adapters tests benchmarks
	$(BIN)/python -m tests.testbed up
	$(BIN)/python -m pytest -ra --durations=40; rc=$$?; $(BIN)/python -m tests.testbed down; exit $$rc

# The performance benchmarks on the testbed (as root, under 15 minutes); py-spy (the
# `bench` extra) profiles the gateway. The results section of RESULTS.md is replaced.
bench: install system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks --profile --markdown benchmarks/RESULTS.md

# ruff, and the import rules of docs/architecture.md (also a test: tests/unit/test_import_rules.py).
lint: install
	$(BIN)/ruff check gateway adapters tests benchmarks
	$(BIN)/ruff format --check gateway adapters tests benchmarks
	$(BIN)/lint-imports --no-cache

schema: install
	$(BIN)/hpcfed center schema > configs/schema/center.schema.json
	$(BIN)/hpcfed center descriptor-schema > configs/schema/computing-power.schema.json
	$(BIN)/python -c 'from gateway.config import app_schema; print(app_schema(), end="")' > configs/schema/app.schema.json
