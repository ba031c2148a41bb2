# Two commands do everything: `make train` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUTPUT_DIR ?= runs/transcription
# Test processes (pytest-xdist): most tests run on one core, so two workers keep both busy.
TEST_WORKERS ?= 2

.PHONY: train train-lm test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The default job: speech transcription on the synthetic corpus the project makes itself.
# Each `make train` trains it again: --overwrite replaces a finished run in OUTPUT_DIR.
train: $(STAMP)
	$(PY) train.py --task transcription --output-dir $(OUTPUT_DIR) --overwrite

train-lm: $(STAMP)
	$(PY) train.py --task language_model --output-dir runs/language_model --overwrite

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist worksteal --durations=15

clean:
	rm -rf $(VENV) runs build *.egg-info
