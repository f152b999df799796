# `make demo` and `make test` work on a fresh machine with only Python 3.11 and pip.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.edgetl-installed
DEMO_OUT ?= runs/demo

.PHONY: setup demo test kernels bench lint clean qemu sshd

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[train,openvino,onnxruntime,bench,test,text,scale]'
	@touch $(STAMP)

kernels: setup
	$(PY) -m edgetl.ops.build

demo: setup kernels
	$(VENV)/bin/edgetl demo --out $(DEMO_OUT)

# qemu-user emulates a CPU without VNNI (AVX2 only) for the INT8 fidelity tests; best effort (they skip without it)
qemu:
	@command -v qemu-x86_64 >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq qemu-user >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
	    apt-get install -y -qq qemu-user >/dev/null 2>&1; }; }; } || echo "qemu-user not installed: the AVX2 fidelity tests will skip"

# openssh-server: tests/remote start a real sshd on a loopback port as the "device"; best effort (they skip without it)
sshd:
	@command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq openssh-server >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
	    apt-get install -y -qq openssh-server >/dev/null 2>&1; }; }; } || echo "openssh-server not installed: the remote deploy tests will skip"

test: setup kernels qemu sshd
	$(VENV)/bin/python -m pytest -q -ra tests

bench: setup kernels
	$(PY) benchmarks/run_all.py

lint: setup
	$(VENV)/bin/ruff check edgetl tests benchmarks
	$(VENV)/bin/ruff format --check edgetl tests benchmarks

clean:
	rm -rf build runs .pytest_cache
