# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_PORT ?= 9002

.PHONY: demo test chroot-test bench bench-load fuzz system-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m compileall -q *.py modules tools  # bytecode now: faster first starts, also where it is not written
	touch $@

# Debian tools the tests use: BART, the ISMRMRD C++ tools (phantom generator), socat (stream relay),
# Chromium and its driver (the dashboard's browser test, headless, no browser download), HAProxy (the
# scale-out tests: tools/cluster.py).
system-deps:
	@if ! command -v bart >/dev/null || ! command -v ismrmrd_generate_cartesian_shepp_logan >/dev/null \
			|| ! command -v socat >/dev/null || ! command -v chromium >/dev/null \
			|| ! command -v chromedriver >/dev/null || ! command -v haproxy >/dev/null; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y bart ismrmrd-tools socat chromium chromium-driver haproxy; \
	fi

demo: $(VENV)/.installed
	PYTHON=$(PY) PORT=$(DEMO_PORT) bash tools/demo.sh

test: system-deps $(VENV)/.installed
	$(PY) -m pytest -q tests

# FIRE chroot image: tools/build_chroot.sh (debootstrap, as root) into $(CHROOT_OUT), then the tests
# in tests/chroot (servers started in the root with chroot, the image read with debugfs).
# CHROOT_OUT is outside the checkout: the root holds device nodes, which no copy of the tree should
# meet. CHROOT_FLAGS: more build_chroot.sh options, e.g. --mirror URL or --cache-dir DIR.
CHROOT_OUT ?= /var/tmp/mrd-server-chroot-test
CHROOT_FLAGS ?=
chroot-test: $(VENV)/.installed
	@PATH="$$PATH:/usr/sbin:/sbin"; \
	if ! command -v debootstrap >/dev/null || ! command -v mke2fs >/dev/null || ! command -v debugfs >/dev/null; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y debootstrap e2fsprogs; \
	fi
	$(SUDO) bash tools/build_chroot.sh --out $(CHROOT_OUT) --keep-root $(CHROOT_FLAGS)
	$(SUDO) env MRD_CHROOT_OUT=$(CHROOT_OUT) $(PY) -m pytest -q tests/chroot

bench: $(VENV)/.installed
	$(PY) bench/bench_core.py

bench-load: $(VENV)/.installed
	$(PY) bench/bench_load.py

# 10,000 mutated sessions and random byte strings against a live server; 0 deaths required.
fuzz: $(VENV)/.installed
	$(PY) tools/fuzz_server.py --cases 10000

clean:
	rm -rf $(VENV) demo .pytest_cache
