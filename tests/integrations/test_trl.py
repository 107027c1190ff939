"""TRL's own ``GRPOTrainer`` runs MedAgentGym episodes through ``environment_factory``: a real
training step on CPU with a tiny model whose ``generate`` is scripted (one rollout submits
the gold code through a tool call, the other a wrong answer); rewards come from our grader
through ``get_reward``. No model is downloaded: the tokenizer is trained here and carries
TRL's own Qwen2.5 chat template, so TRL's tool-call parser reads the scripted calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integrations.conftest import FAMILY, need


@pytest.fixture(scope="module")
def trl():
    need("transformers", "train")
    return need("trl", "train")


def _tiny_model(out: Path, texts: list[str]) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from trl.chat_template_utils import qwen2_5_chat_template

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None)
    fast.chat_template = qwen2_5_chat_template
    fast.save_pretrained(out)
    cfg = Qwen2Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=32768, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    import torch

    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    return out


def _call(name: str, **arguments: str) -> str:
    return ("<tool_call>\n" + json.dumps({"name": name, "arguments": arguments})
            + "\n</tool_call><|im_end|>")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_grpo_trains_a_step_with_our_environment(trl, gold, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medagentgym.integrations.trl import environment_factory, train_dataset

    scripts = [_call("submit", code=gold["code"]), _call("submit", code="answer = -12345")]
    model_dir = _tiny_model(tmp_path / "tiny", [*scripts, "Done.", gold["task"].goal] * 3)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generated: list[str] = []

    def scripted_generate(input_ids=None, attention_mask=None, **_):
        rows = []
        for i, ids in enumerate(input_ids):
            seen = tok.decode(ids)
            text = "Done.<|im_end|>" if "<tool_response>" in seen else scripts[i % 2]
            generated.append(text)
            rows.append(torch.tensor(tok.encode(text)))
        width = max(len(r) for r in rows)
        pad = torch.full((len(rows), width), tok.pad_token_id)
        for i, r in enumerate(rows):
            pad[i, : len(r)] = r
        return torch.cat([input_ids, pad], dim=1)

    model.generate = scripted_generate
    data = train_dataset("treqs", "test", **FAMILY).select([gold["index"]])
    args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, num_generations=2,
                          per_device_train_batch_size=2, gradient_accumulation_steps=1,
                          max_completion_length=2048, learning_rate=1e-3, report_to=[],
                          logging_steps=1, save_strategy="no", use_cpu=True, bf16=False,
                          max_tool_calling_iterations=2)
    factory = environment_factory("treqs", "test", sandbox="auto", **FAMILY)
    trainer = trl.GRPOTrainer(model=model, processing_class=tok, args=args,
                              train_dataset=data, environment_factory=factory)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    envs = trainer._environment_pool[None]
    rewards = sorted(e.get_reward() for e in envs[:2])
    assert rewards == [0.0, 1.0], rewards
    assert any(e._episode.calls == 1 and e._episode.done for e in envs)
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert logged["rewards/MedAgentGymEnvironment/mean"] == pytest.approx(0.5)
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    for e in envs:
        e._close()
