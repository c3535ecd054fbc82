# Two commands on a fresh machine:  `make run` (the benchmark)  and  `make test` (the tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
CONFIG ?= config/config.yaml
# More snakemake arguments, e.g. ARGS="--keep-going" or ARGS="--profile slurm".
ARGS ?=

.PHONY: run publish test test-slow lint bench install clean-results config-doc
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first, from the pinned constraints, so nothing pulls a CUDA build.
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	# medmnist declares torchvision, which does not import beside this torch: no deps.
	$(BIN)/pip install --quiet --no-deps medmnist
	# jax-privacy's auditing.py is the independent reference of the audit test; the package
	# declares jax, which that file does not need.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt jax-privacy
	touch $@

# Also the command to resume an interrupted run: finished jobs are kept, jobs a hard kill left
# incomplete are redone (profiles/default), and a lock left by a dead run is removed (only if no
# snakemake runs here; see src/fedsafe/launch.py).
run: install
	$(BIN)/python -m fedsafe.launch --cores $(CORES) --configfile $(CONFIG) $(ARGS)

# The published grid (config/published.yaml: the default grid's cells over 10 seeds, about an hour on
# 2 cores), then its verdicts into the README block and docs/results.md, with its summary.csv
# copied to docs/published/ and the commit that ran it named.
publish: install
	$(BIN)/python -m fedsafe.launch --cores $(CORES) --configfile config/published.yaml $(ARGS)
	$(BIN)/fedsafe publish results/published --configfile config/published.yaml \
		--commit $$(git rev-parse --short HEAD)

# One torch thread per test worker: with torch's default (a thread per core in every worker)
# OpenMP threads spin against each other and tests run several times slower. Tests and jobs that
# need more threads set them (torch.set_num_threads, a rule's threads).
TEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest --dist loadgroup

# The quick suite, for the edit-test loop (a few minutes on 2 cores).
# Three workers on two cores: about a third of the quick suite waits on subprocesses (Snakemake
# dry runs, MLflow, the job server), so a third worker fills those waits (3 min 41-52 s against
# 3 min 56 s to 4 min 6 s with two, docs/performance.md).
test: install
	$(TEST) -n 3 -m "not slow and not slurm"

# End-to-end runs of the workflow and the real-SLURM test (skipped where no SLURM answers).
test-slow: install
	$(TEST) -n 2 -m "slow or slurm"

config-doc: install  # regenerate config/README.md from the schema and the registries
	$(BIN)/python -m fedsafe.config_doc config/README.md

bench: install  # speed ratios, see bench/README.md; BENCH_ARGS="--grid" also times the default grid
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/ruff check src tests bench workflow
	$(BIN)/lint-imports --no-cache

clean-results:
	rm -rf results/* .snakemake
