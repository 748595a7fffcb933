# Two set-up-free entry points: `make demo` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

# Keep every Ray port on loopback, no Ray auth tokens, no model hub, DeepSpeed on CPU when no GPU.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_AUTH_MODE := disabled
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint bench bench-smoke clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/unigrpo train

# The dashboard's browser tests drive Debian's chromium by path (a browser download is not possible).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	else echo "the dashboard tests need Chromium: sudo apt-get install -y chromium" >&2; exit 1; fi

# pytest exits 5 when it collects nothing: that is a failure, not a pass.
# The benchmarks' smoke runs (marked `bench`) are `make bench-smoke`'s: CI runs both targets.
test: $(VENV)/.installed $(CHROMIUM)
	$(PY) -m pytest -q -ra -m "not bench"; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

test-fast: $(VENV)/.installed $(CHROMIUM)
	$(PY) -m pytest -q -ra -m "not slow and not bench"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# Every benchmark at full size (see each script's docstring for what it measures and how long it takes);
# gpu_8b.py and gpu_e2e.py need a CUDA GPU with >= 80 / 100 GB and are skipped without one.
bench: $(VENV)/.installed $(CHROMIUM)
	$(PY) benchmarks/sampler.py
	$(PY) benchmarks/learner.py
	$(PY) benchmarks/math_reward.py
	$(PY) benchmarks/e2e.py
	$(PY) benchmarks/colocate.py
	$(PY) benchmarks/staleness.py
	$(PY) benchmarks/elastic.py
	$(PY) benchmarks/overlap.py
	$(PY) benchmarks/lora.py
	$(PY) benchmarks/dashboard.py
	$(PY) benchmarks/token_traces.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/zero3_load.py
	$(PY) benchmarks/t2i_probe.py
	$(PY) benchmarks/ablate.py
	@if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then $(PY) benchmarks/gpu_8b.py; \
	$(PY) benchmarks/gpu_e2e.py; else echo "bench: benchmarks/gpu_8b.py and gpu_e2e.py skipped (no CUDA GPU)"; fi

# Every benchmark's --smoke mode (the same code path, shrunk to seconds; gpu_8b.py on CPU): fails if any
# fails or prints no valid `RESULT {json}` line.
bench-smoke: $(VENV)/.installed $(CHROMIUM)
	$(PY) -m pytest -q -ra -m bench tests/test_benchmarks.py; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) runs .pytest_cache
