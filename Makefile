# Two commands for a fresh clone:  make demo   and   make test
# Both create .venv on first use (offline model, no Docker, no network at run time).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := $(shell grep '^torch==' requirements.txt)

# The real bug reports ship in data/gitbugs/ (load_gitbugs() reads them; QIS_GITBUGS_DIR overrides).
# Fail loudly if anything tries to reach a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: setup browser demo test notebooks clean cluster-test

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: this exact version is the CPU build; otherwise pip pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# tests/test_docs_page.py opens the service's /docs page in a headless Chromium (Debian's package).
# Installed here where apt-get runs as root; elsewhere nothing happens and that test skips, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "browser: installing chromium (apt-get) for the docs page test"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
	      || echo "browser: apt-get could not install chromium; the docs page test will skip"; \
	  else echo "browser: no chromium, and no apt-get as root to install it; the docs page test will skip"; fi; }

demo: setup
	$(BIN)/python -m qis_lib.experiments.demo

# --nbval-lax: every notebook cell must run without error, and only cells marked
# NBVAL_CHECK_OUTPUT have their output compared; timings and model scores vary by a
# few digits between runs and machines, so comparing every output would fail on noise.
# -n 2 --dist loadscope: two workers; each notebook (its cells share one kernel and run in
# order), each test module and each test class goes whole to one of them. Most tests wait on
# servers and child processes, so two workers on 2 cores take well under the time of one.
test: setup browser
	$(BIN)/python -m pytest -n 2 --dist loadscope tests --nbval-lax --nbval-cell-timeout=300 notebooks

# With Docker: docker-compose.yml's 3-node Qdrant cluster up (or the running one reused), the
# server conformance tests, the live cluster tests and the failover experiment, results in
# results/cluster-test/, then down if it was started here.
cluster-test: setup browser
	$(BIN)/python -m qis_lib.infra.cluster_check --out results/cluster-test

notebooks: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) .pytest_cache
