# Two commands on a fresh machine: `make serve` and `make test`. `make setup` is idempotent.
PY        ?= python3
VENV      := .venv
VPY       := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup lint test test-fast serve bench soak clean clean-all check-java

setup: $(STAMP) check-java

# requirements-kserve.txt: KServe's model server, for the KServe-native predictor and its tests
$(STAMP): requirements.txt requirements-kserve.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt -r requirements-kserve.txt
	@touch $(STAMP)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "Java >= 17 is required by TorchServe and was not found. Install it, e.g.: sudo apt-get install -y openjdk-17-jre-headless"; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "Java >= 17 is required by TorchServe, found '$$v'. Install it, e.g.: sudo apt-get install -y openjdk-17-jre-headless"; exit 1; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: setup lint
	$(VPY) -m pytest $(PYTEST_ARGS)

# The edit loop (< 30 s): everything but the tests that start TorchServe or a subprocess, or run the teacher.
test-fast: $(STAMP)
	$(VPY) -m pytest -m "not slow" $(PYTEST_ARGS)

serve: setup
	$(VPY) client_infer.py

bench: setup
	OMP_WAIT_POLICY=PASSIVE $(VPY) -m bench.run_bench

soak: setup
	$(VPY) -m bench.soak

# Keeps the trained models (runs/models/); deletes the rest of runs/ (serving runs, metrics, exports), the
# built .mar files, logs and caches.
clean:
	@if [ -d runs ]; then find runs -mindepth 1 -maxdepth 1 ! -name models -exec rm -rf {} +; fi
	rm -rf model_store/*.mar logs .pytest_cache .ruff_cache
	find . -path ./.venv -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

# Everything `make clean` deletes and the trained models too (all of runs/).
clean-all: clean
	rm -rf runs
