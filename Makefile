# Two commands on a fresh machine:  `make run` (the benchmark)  and  `make test` (the tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: run test lint bench install clean-results
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first, from the pinned constraints, so nothing pulls a CUDA build.
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	# medmnist declares torchvision, which does not import beside this torch: no deps.
	$(BIN)/pip install --quiet --no-deps medmnist
	touch $@

run: install
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: install  # speed ratios, see bench/README.md; BENCH_ARGS="--grid" also times the default grid
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/

clean-results:
	rm -rf results/* .snakemake
