"""Training that explains itself (issue 18): chat templates without the markers
assistant-only loss needs are replaced by the packaged template of the model's family (or one
line names the setting), the packaged templates render well-formed conversations with the
assistant's tokens marked, and a copy of any packaged config file means what it says."""

from __future__ import annotations

import re
import shutil
import tomllib

import pytest

from medagentgym.errors import ConfigurationError
from medagentgym.train import recipes

CONVO = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
         {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"},
         {"role": "assistant", "content": "A2"}]


class _Tok:
    def __init__(self, template: str | None, specials: list[str] | None = None) -> None:
        self.chat_template = template
        self.all_special_tokens = specials or []


@pytest.mark.parametrize(("own", "family"), [
    ("{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}", "chatml"),
    # SmolLM2's: ChatML with add_generation_prompt but no {% generation %} block
    ("{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}"
     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", "chatml"),
    ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}{% endfor %}", "llama3"),
    ("{% for m in messages %}<start_of_turn>{{ m['content'] }}{% endfor %}", "gemma"),
])
def test_a_template_without_generation_markers_gets_its_familys(own, family):
    got = recipes.chat_template_for(_Tok(own), "auto", need_generation=True)
    assert got == recipes.TEMPLATES[family]
    assert recipes.chat_template_for(_Tok(own), "auto", need_generation=False) is None


def test_an_unknown_template_names_the_setting_and_forcing_works():
    own = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigurationError, match=r"chat_template = 'chatml' \| 'llama3'"):
        recipes.chat_template_for(_Tok(own), "auto", need_generation=True)
    assert recipes.chat_template_for(_Tok(own), "gemma", need_generation=True) == \
        recipes.GEMMA_TEMPLATE
    with pytest.raises(ConfigurationError, match="not one of auto"):
        recipes.chat_template_for(_Tok(own), "vicuna", need_generation=True)
    marked = "{% generation %}x{% endgeneration %}"
    assert recipes.chat_template_for(_Tok(marked), "auto", need_generation=True) is None


@pytest.mark.parametrize("family", ["chatml", "llama3", "gemma"])
def test_packaged_templates_mark_exactly_the_assistant_turns(family):
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, generation = render_jinja_template(
        conversations=[CONVO], chat_template=recipes.TEMPLATES[family],
        return_assistant_tokens_mask=True, bos_token="<bos>")
    text = rendered[0]
    assert all(part in text for part in ("S", "U1", "A1", "U2", "A2"))
    marked = "".join(text[a:b] for a, b in generation[0])
    assert "A1" in marked and "A2" in marked
    assert "U1" not in marked and "U2" not in marked and "S" not in marked
    prompt, _ = render_jinja_template(conversations=[CONVO[:2]],
                                      chat_template=recipes.TEMPLATES[family],
                                      add_generation_prompt=True, bos_token="<bos>")
    assert prompt[0].rstrip().endswith(("assistant", "model", "<|end_header_id|>"))


@pytest.mark.parametrize("recipe", recipes.RECIPES)
def test_a_copy_of_a_packaged_config_round_trips_every_key(recipe, tmp_path):
    packaged = recipes.CONFIG_DIR / f"{recipe}.toml"
    copy = tmp_path / f"{recipe}.toml"
    shutil.copy(packaged, copy)
    assert recipes.load_recipe_config(recipe, copy) == tomllib.loads(packaged.read_text())
    # a changed value in every section takes effect (nothing is dropped)
    data = tomllib.loads(packaged.read_text())
    text = copy.read_text()
    for section, values in data.items():
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            text = re.sub(rf"^\[{section}\]$", f"[{section}]\n{key}_probe = 1", text,
                          count=1, flags=re.M)
            break
    edited = tmp_path / "edited.toml"
    edited.write_text(text)
    cfg = recipes.load_recipe_config(recipe, edited)
    for section, values in data.items():
        probe = next((f"{k}_probe" for k, v in values.items()
                      if isinstance(v, int | float) and not isinstance(v, bool)), None)
        if probe:
            assert cfg[section][probe] == 1, (recipe, section)


def test_wrapped_files_and_unknown_sections(tmp_path):
    wrapped = tmp_path / "w.toml"
    wrapped.write_text("[sft.training]\nlearning_rate = 0.5\n")
    assert recipes.load_recipe_config("sft", wrapped)["training"]["learning_rate"] == 0.5
    bad = tmp_path / "b.toml"
    bad.write_text("[trainng]\nlearning_rate = 0.5\n")
    with pytest.raises(ConfigurationError, match=r"unknown section\(s\) \[trainng\]"):
        recipes.load_recipe_config("sft", bad)
    broken = tmp_path / "x.toml"
    broken.write_text("[training\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        recipes.load_recipe_config("sft", broken)
