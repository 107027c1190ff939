"""Training recipes on TRL: SFT, DPO (after an SFT warm-up) and the YES/NO verifier.

    medagentgym train sft --model Qwen/Qwen2.5-7B-Instruct --data sft.jsonl --out ckpt/sft
    medagentgym train dpo --model ckpt/sft --data dpo.jsonl --out ckpt/dpo
    medagentgym train verifier --model Qwen/Qwen2.5-7B-Instruct --data ver.jsonl --out ckpt/ver

Settings come from the packaged TOML configs (``train/configs/{sft,dpo,verifier,grpo}.toml``,
the paper's hyperparameters), then a ``--config FILE`` of the same shape, then flags:

* ``[training]`` — any field of TRL's ``SFTConfig`` / ``DPOConfig`` / ``GRPOConfig`` (or
  ``transformers.TrainingArguments`` for the verifier);
* ``[lora]`` — ``enabled = true`` trains a LoRA adapter (``r``, ``alpha``, ``dropout``,
  ``target_modules``) through PEFT;
* ``[model]`` — ``dtype`` (``auto``, ``bfloat16``, ``float32``), ``chat_template``
  (``auto``: the tokenizer's, with TRL's training variant for assistant-only loss; or
  ``chatml``: the ChatML template with generation markers, right for Qwen2.5).

Multi-GPU: ``accelerate launch --config_file train/configs/accelerate/zero3.yaml -m
medagentgym.cli train sft ...`` (see ``docs/training.md``).

Heavy imports (torch, transformers, trl, peft) happen inside the functions.
"""

from __future__ import annotations

import copy
import json
import re
import time
import tomllib
from pathlib import Path
from typing import Any

from medagentgym.errors import ConfigurationError

CONFIG_DIR = Path(__file__).parent / "configs"
RECIPES = ("sft", "dpo", "verifier", "grpo")

#: ChatML (Qwen2.5's format) with ``{% generation %}`` markers around assistant replies, so
#: TRL's ``assistant_only_loss`` can mask everything else.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


#: Llama 3 (and 3.x) with generation markers
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}{{- message['content'] + '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)

#: Gemma (2 and 3) with generation markers; Gemma has no system role, so a system message
#: opens the first user turn
GEMMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- set ns = namespace(system='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- set ns.system = message['content'] + '\n\n' %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<start_of_turn>model\n' }}"
    "{%- generation %}{{- message['content'] + '<end_of_turn>' }}{%- endgeneration %}"
    "{{- '\n' }}"
    "{%- else %}"
    "{{- '<start_of_turn>user\n' + ns.system + message['content'] + '<end_of_turn>\n' }}"
    "{%- set ns.system = '' %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\n' }}{%- endif %}"
)

#: packaged templates (with ``{% generation %}`` markers, for assistant-only loss) and the
#: marker in a tokenizer's own template that identifies the family (ChatML covers Qwen 2.5/3
#: and SmolLM2)
TEMPLATES = {"chatml": CHATML_TEMPLATE, "llama3": LLAMA3_TEMPLATE, "gemma": GEMMA_TEMPLATE}
_FAMILY_MARKERS = (("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3"),
                   ("<start_of_turn>", "gemma"))


#: a ``{% generation %}`` block (not ``add_generation_prompt``, which every template has)
_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def chat_template_for(tok: Any, setting: str | None, *, need_generation: bool) -> str | None:
    """The chat template to train with: ``setting`` names a packaged one (``chatml``,
    ``llama3``, ``gemma``) or ``auto`` — the tokenizer's own when it has what training needs
    (``{% generation %}`` markers for assistant-only loss), else the packaged template of
    the family its template or special tokens show. None: keep the tokenizer's. Raises one
    line naming the setting when nothing fits."""
    setting = (setting or "auto").lower()
    if setting in TEMPLATES:
        return TEMPLATES[setting]
    if setting != "auto":
        raise ConfigurationError(f"[model] chat_template = {setting!r} is not one of auto, "
                                 f"{', '.join(TEMPLATES)}")
    own = tok.chat_template if isinstance(getattr(tok, "chat_template", None), str) else ""
    if own and (not need_generation or _GENERATION_MARKER.search(own)):
        return None
    if own:
        try:  # TRL's training variant of a template it knows exactly
            from trl.chat_template_utils import get_training_chat_template

            patched = get_training_chat_template(tok)
            if isinstance(patched, str):
                return patched
        except Exception:  # not one TRL knows: our packaged families below
            pass
    vocab_text = own + " ".join(str(t) for t in getattr(tok, "all_special_tokens", []) or [])
    for marker, family in _FAMILY_MARKERS:
        if marker in vocab_text:
            return TEMPLATES[family]
    if not own:
        return CHATML_TEMPLATE
    raise ConfigurationError(
        "the tokenizer's chat template has no {% generation %} markers, which assistant-only "
        "loss needs, and is not one of the families packaged here (ChatML: Qwen 2.5/3, "
        "SmolLM2; Llama 3; Gemma): set [model] chat_template = 'chatml' | 'llama3' | 'gemma' "
        "to the format the model was trained with, or [training] assistant_only_loss = false")


# ------------------------------------------------------------------------------ configs


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_recipe_config(recipe: str, path: str | Path | None = None,
                       overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The packaged defaults for ``recipe``, then the file at ``path``, then ``overrides``."""
    if recipe not in RECIPES:
        raise ConfigurationError(f"unknown recipe {recipe!r}; choose one of {RECIPES}")
    cfg = tomllib.loads((CONFIG_DIR / f"{recipe}.toml").read_text())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigurationError(f"no config file {p}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{p} is not valid TOML: {exc}") from None
        known = set(cfg)
        wrapped = data.get(recipe)
        # ``[sft.training]``-style files wrap the recipe's sections in a table named after
        # it; a file laid out like the packaged one (e.g. verifier.toml's own [verifier]
        # table beside [training]) is taken as it is
        if (isinstance(wrapped, dict) and not (set(data) - {recipe})
                and any(isinstance(v, dict) for v in wrapped.values())
                and set(wrapped) <= known):
            data = wrapped
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"{p}: unknown section(s) {', '.join(f'[{u}]' for u in unknown)} for the "
                f"{recipe} recipe; its sections are {', '.join(f'[{k}]' for k in sorted(known))}")
        cfg = _merge(cfg, data)
    return _merge(cfg, overrides or {})


def _device_defaults(training: dict[str, Any]) -> dict[str, Any]:
    """bf16 only where a GPU supports it; no pinned memory on CPU."""
    import torch

    out = dict(training)
    cuda = torch.cuda.is_available()
    if out.get("bf16") in (None, "auto"):
        out["bf16"] = bool(cuda and torch.cuda.is_bf16_supported())
    if not cuda:
        out["bf16"] = False
        out["fp16"] = False
        out.setdefault("dataloader_pin_memory", False)
    return out


def _training_args(cls: type, cfg: dict[str, Any], out: str | Path,
                   max_steps: int | None) -> Any:
    import dataclasses

    training = _device_defaults(cfg.get("training", {}))
    if max_steps is not None:
        training["max_steps"] = max_steps
    known = {f.name for f in dataclasses.fields(cls)}
    for new, old in (("activation_checkpointing", "gradient_checkpointing"),
                     ("warmup_steps", "warmup_ratio")):  # transformers 5 names vs 4
        if new in training and new not in known and old in known:
            training[old] = training.pop(new)
    unknown = set(training) - known
    if unknown:
        raise ConfigurationError(f"unknown [training] settings for {cls.__name__}: "
                                 f"{', '.join(sorted(unknown))}")
    training.setdefault("report_to", "none")
    return cls(output_dir=str(out), **training)


def _dtype(name: str | None) -> Any:
    import torch

    if name in (None, "auto"):
        return "auto"
    try:
        return getattr(torch, name)
    except AttributeError:
        raise ConfigurationError(f"unknown dtype {name!r}") from None


def _model_files(model: str | Path) -> tuple[str, dict[str, Any]]:
    """Where transformers loads ``model`` from: a checkpoint directory or hub name, or a GGUF
    file (``local:`` specs included) through transformers' GGUF loader."""
    spec = str(model)
    if spec.startswith("local:") or spec.lower().endswith(".gguf"):
        from medagentgym.llm.local import resolve

        m = resolve(spec)
        return str(m.directory), ({"gguf_file": m.gguf_file} if m.gguf_file else {})
    return spec, {}


def load_model_and_tokenizer(model: str | Path, cfg: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mcfg = cfg.get("model", {})
    where, kw = _model_files(model)
    tok = AutoTokenizer.from_pretrained(where, **kw)
    need = bool(cfg.get("training", {}).get("assistant_only_loss"))
    template = chat_template_for(tok, mcfg.get("chat_template"), need_generation=need)
    if template is not None:
        tok.chat_template = template
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    net = AutoModelForCausalLM.from_pretrained(where, dtype=_dtype(mcfg.get("dtype")), **kw)
    if kw.get("gguf_file"):
        # a model dequantised from GGUF keeps traces of its loader that save_pretrained
        # refuses: copy its weights into a fresh model of the same configuration
        import torch

        fresh = AutoModelForCausalLM.from_config(net.config, dtype=net.dtype)
        with torch.no_grad():
            missing = fresh.load_state_dict(net.state_dict(), strict=False)
        if missing.missing_keys:
            raise ConfigurationError(f"{model}: the GGUF weights do not cover "
                                     f"{len(missing.missing_keys)} parameters of the model")
        if getattr(fresh.config, "tie_word_embeddings", False):
            fresh.tie_weights()
        net = fresh
    return net, tok


def peft_config(cfg: dict[str, Any]) -> Any:
    lora = cfg.get("lora", {})
    if not lora.get("enabled"):
        return None
    from peft import LoraConfig

    return LoraConfig(r=int(lora.get("r", 16)), lora_alpha=int(lora.get("alpha", 32)),
                      lora_dropout=float(lora.get("dropout", 0.05)),
                      target_modules=lora.get("target_modules", "all-linear"),
                      task_type="CAUSAL_LM")


def load_rows_dataset(data: str | Path | list[str | Path], columns: list[str] | None = None) -> Any:
    """A ``datasets.Dataset`` from exported JSONL/Parquet files (only ``columns`` kept)."""
    from datasets import load_dataset

    files = [str(p) for p in (data if isinstance(data, list) else [data])]
    kind = "parquet" if all(f.endswith(".parquet") for f in files) else "json"
    ds = load_dataset(kind, data_files=files, split="train")
    if columns:
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise ConfigurationError(f"{files}: missing columns {missing} (is this the right "
                                     "export?)")
        ds = ds.select_columns(columns)
    return ds


class _LossLog:
    """A callback collecting the logged losses (for the summary and the tests)."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class _CB(TrainerCallback):
            def __init__(self) -> None:
                self.losses: list[float] = []
                self.logs: list[dict[str, Any]] = []

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                       **kw: Any) -> None:
                if logs:
                    self.logs.append(dict(logs))
                    if "loss" in logs:
                        self.losses.append(float(logs["loss"]))

        return _CB()


def _finish(trainer: Any, log: Any, out: Path, recipe: str, cfg: dict[str, Any], t0: float,
            result: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    trainer.save_model(str(out))
    tok = getattr(trainer, "processing_class", None)
    if tok is not None:
        tok.save_pretrained(str(out))
    elapsed = time.perf_counter() - t0
    steps = trainer.state.global_step
    summary = {"recipe": recipe, "out": str(out), "steps": steps, "losses": log.losses,
               "train_loss": getattr(result, "training_loss", None),
               "seconds": round(elapsed, 3), "steps_per_s": round(steps / elapsed, 4) if elapsed else None,
               "config": cfg, **(extra or {})}
    (out / "medagentgym_train.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


# --------------------------------------------------------------------------------- SFT


def train_sft(model: str | Path, data: str | Path | list[str | Path], out: str | Path, *,
              config: str | Path | None = None, max_steps: int | None = None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Supervised fine-tuning on exported SFT conversations (assistant turns as targets)."""
    from trl import SFTConfig, SFTTrainer

    cfg = load_recipe_config("sft", config, overrides)
    out = Path(out)
    args = _training_args(SFTConfig, cfg, out, max_steps)
    net, tok = load_model_and_tokenizer(model, cfg)
    ds = load_rows_dataset(data, ["messages"])
    log = _LossLog()
    trainer = SFTTrainer(model=net, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=peft_config(cfg), callbacks=[log])
    t0 = time.perf_counter()
    result = trainer.train()
    return _finish(trainer, log, out, "sft", cfg, t0, result, {"examples": len(ds)})


# --------------------------------------------------------------------------------- DPO


def train_dpo(model: str | Path, data: str | Path | list[str | Path], out: str | Path, *,
              config: str | Path | None = None, max_steps: int | None = None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """DPO on exported pairs; ``model`` should be the SFT checkpoint (the paper's warm-up).
    The reference model is a frozen copy of ``model`` (or the base under a LoRA adapter)."""
    from trl import DPOConfig, DPOTrainer

    cfg = load_recipe_config("dpo", config, overrides)
    out = Path(out)
    args = _training_args(DPOConfig, cfg, out, max_steps)
    net, tok = load_model_and_tokenizer(model, cfg)
    ds = load_rows_dataset(data, ["prompt", "chosen", "rejected"])
    log = _LossLog()
    trainer = DPOTrainer(model=net, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=peft_config(cfg), callbacks=[log])
    t0 = time.perf_counter()
    result = trainer.train()
    return _finish(trainer, log, out, "dpo", cfg, t0, result, {"pairs": len(ds)})
