"""PEFT x quantization: each sensible pair trains on CPU, trains only what it should, and exports
files that plain transformers/peft load; merged weights match the adapter."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import batch_samples, compose, fit_repeated, make_module

from hydratune.data.collate import PadCollator
from hydratune.export import export_artifact, load_artifact, logit_parity, merge_adapter
from hydratune.generate import generate
from hydratune.rules import violations

COMBOS = [
    ("lora", "none"),
    ("dora", "none"),
    ("rslora", "none"),
    ("qlora", "nf4"),
    ("lora", "fp4"),
    ("lora", "int8"),
    ("lora", "int4"),
    ("freeze", "none"),
    ("none", "none"),
]


@pytest.mark.parametrize(("peft", "quantization"), COMBOS, ids=[f"{p}+{q}" for p, q in COMBOS])
def test_peft_quantization_trains_and_exports(peft, quantization, tiny_model_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    module = make_module(tiny_model_dir, peft=peft, overrides=[f"quantization={quantization}"])
    module.configure_model()
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    if peft in {"lora", "dora", "rslora", "qlora"}:
        assert trainable and all("lora_" in n for n in trainable), sorted(trainable)[:5]
        if peft == "dora":
            assert any("lora_magnitude_vector" in n for n in trainable)
    elif peft == "freeze":
        # Only the last 2 of the 2 layers and lm_head; the embeddings stay frozen.
        assert any("lm_head" in n for n in trainable)
        assert not any("embed_tokens" in n for n in trainable)
    else:
        assert len(trainable) == len(list(module.model.parameters()))
    if quantization != "none":
        import bitsandbytes as bnb

        quantized = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
        assert any(isinstance(m, quantized) for m in module.model.modules())

    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    losses = fit_repeated(module, batch, steps=2)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in module.model.named_parameters() if n in before and not torch.equal(before[n], p)]
    assert changed, "no trainable parameter moved"

    out = export_artifact(module.model, tokenizer, tmp_path)
    expected = "adapter" if peft in {"lora", "dora", "rslora", "qlora"} else "model"
    assert out.name == expected
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    if expected == "adapter":
        assert (out / "adapter_model.safetensors").is_file()
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["use_dora"] == (peft == "dora") and config["use_rslora"] == (peft == "rslora")
    else:
        assert (out / "model.safetensors").is_file()
    model, loaded_tokenizer = load_artifact(out)
    text = generate(model, loaded_tokenizer, ["abc"], max_new_tokens=4)
    assert isinstance(text[0], str)


def test_qlora_composes_lora_on_nf4():
    cfg = compose(["peft=qlora"])
    assert cfg.quantization.config.bnb_4bit_quant_type == "nf4"
    assert cfg.quantization.config.bnb_4bit_compute_dtype == "bfloat16"
    assert cfg.quantization.config.bnb_4bit_use_double_quant is True
    assert cfg.peft.config.r == 64 and cfg.peft.config.target_modules == "all-linear"


def test_int4_is_nf4():
    assert compose(["quantization=int4"]).quantization == compose(["quantization=nf4"]).quantization


def test_quantization_without_peft_is_an_error():
    from hydratune.config import to_plain

    found = violations(to_plain(compose(["peft=none", "quantization=nf4"])))
    assert any(m.startswith("quantization, peft:") for m in found)


def test_merged_model_matches_adapter(tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    module = make_module(tiny_model_dir, peft="lora", overrides=["optimizer.lr=0.05"])
    module.configure_model()
    fit_repeated(module, PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer)), steps=3)
    adapter = export_artifact(module.model, tokenizer, tmp_path)
    merged = merge_adapter(adapter, tmp_path / "merged")
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    diff = logit_parity(adapter, merged)
    assert diff < 1e-3
    # The merge did something: merged weights differ from the base.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = AutoModelForCausalLM.from_pretrained(merged)
    assert not torch.equal(
        base.model.layers[0].self_attn.q_proj.weight, plain.model.layers[0].self_attn.q_proj.weight
    )


def test_a_qlora_merge_is_measured_against_the_model_the_run_trained(
    tiny_model_dir, tokenizer, tmp_path, caplog
):
    """The parity check compares merged/ with the adapter on the full-precision base, which cannot see that a QLoRA
    run trained and evaluated the adapter on a 4-bit base (review O6: 8e-5 said, 10.7 real). merge_export now
    measures merged/ against the adapter on the base quantized as the run's config says, and the card says it."""
    from peft import PeftModel

    from hydratune.card import write_card
    from hydratune.config import to_plain
    from hydratune.model import load_model
    from hydratune.tasks.registry import get_task
    from hydratune.train import merge_export

    torch.manual_seed(0)
    module = make_module(tiny_model_dir, peft="lora", overrides=["optimizer.lr=0.05"])
    module.configure_model()
    fit_repeated(module, PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer)), steps=3)
    adapter = export_artifact(module.model, tokenizer, tmp_path)
    cfg = to_plain(compose(["peft=qlora", "quantization=nf4", f"model.pretrained_model_name_or_path={tiny_model_dir}",
                            "model.dtype=float32"]))  # fmt: skip
    with caplog.at_level("WARNING", logger="hydratune.export"):
        measured = merge_export(adapter, tmp_path, cfg)
    gap = measured["merged_vs_trained_max_abs_logit_diff"]
    assert measured["merge_max_abs_logit_diff"] < 1e-3 < gap  # the 4-bit rounding the old check could not see
    assert f"max |logit diff| {gap:.3g} on the parity prompts" in caplog.text
    # the gap is the trained model's: the adapter on the nf4 base, as training loaded it
    trained = PeftModel.from_pretrained(load_model(cfg["model"], None, cfg["quantization"]), adapter).eval()
    merged, _ = load_artifact(tmp_path / "merged")
    ids = tokenizer("0123456789", return_tensors="pt").input_ids
    with torch.no_grad():
        one = float((trained(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max())
    assert 0 < one <= gap
    card = write_card(tmp_path / "merged", cfg, {"steps": 3} | measured, get_task(cfg["task"]), tokenizer)
    assert (
        f"Measured: max |logit difference| {gap:.3g} between the two on three test prompts."
        in card.read_text()
    )
    unquantized = to_plain(compose([f"model.pretrained_model_name_or_path={tiny_model_dir}"]))
    assert "merged_vs_trained_max_abs_logit_diff" not in merge_export(adapter, tmp_path, unquantized)


def test_half_precision_parity_allows_rounding_but_not_a_lost_adapter_and_a_run_keeps_its_results(
    tiny_model_dir, tokenizer, tmp_path, monkeypatch
):
    import shutil

    import hydratune.export
    from hydratune.train import merge_export

    torch.manual_seed(0)
    module = make_module(tiny_model_dir, peft="lora", overrides=["optimizer.lr=0.05"])
    module.configure_model()
    fit_repeated(module, PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer)), steps=3)
    adapter = export_artifact(module.model, tokenizer, tmp_path)
    merged = merge_adapter(adapter, tmp_path / "merged", "float16")
    assert logit_parity(adapter, merged, "float16") < 5e-2
    lost = tmp_path / "lost"  # the base alone: what a merge that rounded the adapter away would hold
    shutil.copytree(tiny_model_dir, lost)
    shutil.copy(merged / "tokenizer.json", lost / "tokenizer.json")
    with pytest.raises(RuntimeError, match="merged model disagrees with its adapter"):
        logit_parity(adapter, lost, "float16")

    # In a run (export.merge=true) a merge that fails its check is removed; metrics.json still gets written.
    def refuse(*args):
        raise RuntimeError("merged model disagrees with its adapter: max |logit diff| 1 > 0.1 in float16")

    monkeypatch.setattr(hydratune.export, "logit_parity", refuse)
    run_dir = tmp_path / "run"
    cfg = {"model": {"dtype": "float16"}, "quantization": {}}
    assert merge_export(adapter, run_dir, cfg)["merge"].startswith("removed: merged model disagrees")
    assert not (run_dir / "merged").exists() and (adapter / "adapter_model.safetensors").is_file()


def test_4bit_gradients_survive_an_evaluation(tokenizer):
    """An evaluation (a forward without gradients) must not change how the 4-bit base layers backpropagate:
    bitsandbytes' AVX512-BF16 CPU layout has no backward, and it used to stay on after the first evaluation."""
    from conftest import ROOT

    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))

    def lora_grads(evaluate_first: bool) -> dict:
        torch.manual_seed(0)
        module = make_module(ROOT / "assets" / "tiny-llama", peft="qlora", overrides=["quantization=nf4"])
        module.configure_model()
        with torch.no_grad():
            for name, p in module.model.named_parameters():
                if "lora_B" in name:  # LoRA B starts at zero: give it values, or the A gradients are all zero
                    p.normal_(std=0.02, generator=torch.Generator().manual_seed(1))
        if evaluate_first:
            module.model.eval()
            with torch.no_grad():
                module(batch)
            module.model.train()
        from hydratune.losses import token_nll

        nll, count = token_nll(module(batch), batch["labels"])
        (nll / count).backward()
        return {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad}

    plain, after_eval = lora_grads(False), lora_grads(True)
    first_layer = [n for n in plain if ".layers.0." in n and "lora_A" in n]
    assert first_layer and all(plain[n].abs().sum() > 0 for n in first_layer)
    for name, grad in plain.items():
        assert torch.allclose(after_eval[name], grad, atol=1e-6), name


def test_layers_to_transform_with_all_linear_targets_every_linear_layer_of_those_layers(tiny_model_dir):
    """llamafarm's `layers_to_transform` beside the default all-linear targets: peft refuses a string
    target with layers, so all-linear is spelled out as the model's linear layers (it crashed the run)."""
    from transformers import AutoModelForCausalLM

    from hydratune.config import to_plain
    from hydratune.model import apply_peft

    cfg = compose(["peft.config.layers_to_transform=[0]"])
    cfg = to_plain(cfg)
    model = apply_peft(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg["peft"])
    adapted = {name.split(".lora_")[0] for name, _ in model.named_parameters() if ".lora_A." in name}
    assert adapted and all(".layers.0." in name for name in adapted)
    projections = {name.rpartition(".")[2] for name in adapted}
    assert projections == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # A regex with layers: peft refuses the pair, so the config check does, before any model loads.
    regex = to_plain(compose(["peft.config.layers_to_transform=[0]", "peft.config.target_modules='.*proj'"]))
    assert [m.split(":")[0] for m in violations(regex)] == [
        "peft.config.layers_to_transform, peft.config.target_modules"
    ]
    assert not violations(cfg)


def test_an_adapter_loads_its_base_from_the_runs_cache_dir(tiny_model_dir, tmp_path, monkeypatch):
    """model.cache_dir (llamafarm's `cache_dir`) held for training but not for the merge, `hydratune merge`
    or `hydratune generate`: with the hub offline they failed after training (O12). The run's saved config
    beside adapter/ gives the base's cache_dir (and revision) back."""
    import shutil

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "model_cache"
    snapshot = cache / "models--acme--tiny" / "snapshots" / ("b" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("b" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read at import
    run = tmp_path / "run"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(snapshot), LoraConfig(r=2, target_modules="all-linear")
    )
    model.peft_config["default"].base_model_name_or_path = "acme/tiny"
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # peft's "could not tell" about a hub id offline
        warnings.simplefilter("always")
        export_artifact(model, AutoTokenizer.from_pretrained(snapshot), run)
    assert not [str(w.message) for w in caught if "acme/tiny" in str(w.message)]
    from hydratune.errors import UserError

    with pytest.raises(
        UserError, match="its base model acme/tiny cannot be loaded here"
    ):  # not in the default cache
        load_artifact(run / "adapter")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        f"model:\n  pretrained_model_name_or_path: acme/tiny\n  cache_dir: {cache}\n"
    )
    loaded, _ = load_artifact(run / "adapter")
    assert loaded.get_base_model().config.hidden_size == model.get_base_model().config.hidden_size
    merge_adapter(run / "adapter", run / "merged")
    assert (run / "merged" / "config.json").is_file()


def test_answers_end_at_the_models_end_of_turn_and_the_export_keeps_it(tiny_model_dir, tokenizer, tmp_path):
    """A chat model names its end of turn in generation_config (Llama 3 Instruct: [<|end_of_text|>,
    <|eot_id|>]); generations stopped only at the tokenizer's EOS and ran on into invented turns, and the
    export replaced the list by EOS alone (review C16)."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = "upper: stone -> "
    free = generate(model, tokenizer, [prompt], max_new_tokens=6)[0]
    first = tokenizer.convert_tokens_to_ids(free[0])  # what greedy decoding writes first...
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, first]  # ... is now an end of turn
    # It stops right there (an end-of-turn marker is a special token, dropped from the text; this one is not).
    assert len(free) > 1 and generate(model, tokenizer, [prompt], max_new_tokens=6) == [free[0]]
    out = export_artifact(model, tokenizer, tmp_path)
    assert GenerationConfig.from_pretrained(out).eos_token_id == [tokenizer.eos_token_id, first]


def test_a_merge_keeps_the_base_checkpoints_dtype_and_the_adapters_generation_config(
    tiny_model_dir, tokenizer, tmp_path
):
    """A bf16 base merged in float32 was twice its size and said float32 (model.dtype=auto, QLoRA's compute
    dtype, `hydratune merge`'s default); merged/ dropped the stop and pad ids the export wrote (review X2, X5).
    Its tokenizer loads in transformers 4 too: no `TokenizersBackend` class (X7)."""
    import json

    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, GenerationConfig

    from hydratune.export import base_dtype, merge_dtype

    base = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base)
    tokenizer.save_pretrained(base)
    torch.manual_seed(0)
    module = make_module(base, peft="lora", overrides=["optimizer.lr=0.05", "model.dtype=float32"])
    module.configure_model()
    fit_repeated(module, PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer)), steps=3)
    newline = tokenizer.convert_tokens_to_ids("\n") if "\n" in tokenizer.get_vocab() else 5
    adapter = export_artifact(module.model, tokenizer, tmp_path / "run", stop_token_ids=[newline])
    assert base_dtype(adapter) == "bfloat16"  # trained in float32, stored in bfloat16
    # what a run merges in: model.dtype where it names one, the base's own for auto
    assert (merge_dtype(adapter, "auto"), merge_dtype(adapter, "float32")) == ("bfloat16", "float32")
    merged = merge_adapter(adapter, tmp_path / "merged", base_dtype(adapter))
    with safe_open(str(merged / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"
    assert logit_parity(adapter, merged, "bfloat16") < 0.1
    # the answers end where training ended them: EOS and the GRPO stop token, in adapter/ and merged/
    for folder in (adapter, merged):
        config = GenerationConfig.from_pretrained(folder)
        assert config.eos_token_id == [tokenizer.eos_token_id, newline] and config.pad_token_id == 0
        saved = json.loads((folder / "tokenizer_config.json").read_text())
        assert saved["tokenizer_class"] == "PreTrainedTokenizerFast"
        # the template also where TGI and older transformers read it, not only chat_template.jinja (review T9)
        assert (
            saved["chat_template"] == tokenizer.chat_template == (folder / "chat_template.jinja").read_text()
        )
    # `hydratune generate` on adapter/ stops there too: it kept the base's generation config (review T2)
    from hydratune.generate import stop_ids

    loaded, _ = load_artifact(adapter)
    assert stop_ids(loaded, tokenizer) == [tokenizer.eos_token_id, newline]


def test_a_chat_templates_end_of_turn_token_ends_answers_where_the_base_names_only_its_eos(
    tokenizer, tmp_path
):
    """Qwen2.5 base ends ChatML turns with <|im_end|> and names <|endoftext|> as EOS: a model trained on the
    template never stopped at the end of its turn in generate, GRPO's sampling or the exported generation config
    (review T1). The template's end-of-turn token, where it is one special token, now ends answers too."""
    from transformers import GenerationConfig

    from hydratune.data.formats import CHAT_TEMPLATES
    from hydratune.generate import end_of_turn_id, stop_ids

    class Base:  # a base model whose generation config names only EOS
        generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id)

    assert end_of_turn_id(tokenizer) == tokenizer.eos_token_id  # the tiny template ends a turn with </s>
    tokenizer.chat_template = CHAT_TEMPLATES["chatml"]
    assert end_of_turn_id(tokenizer) is None  # <|im_end|> spelt out in characters: no one token to stop at
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tokenizer) == im_end
    assert stop_ids(Base(), tokenizer) == [tokenizer.eos_token_id, im_end]
    tokenizer.chat_template = "{{ raise_exception('a system turn first') }}"  # a template refusing the probe
    assert end_of_turn_id(tokenizer) is None and stop_ids(Base(), tokenizer) == [tokenizer.eos_token_id]


def test_hydratune_merge_writes_a_card_in_the_runs_dtype(tiny_model_dir, tokenizer, tmp_path, capsys):
    """`hydratune merge` wrote no model card (export.merge=true did), and merged in float32 whatever the run
    trained in (review X2, X6)."""
    from omegaconf import OmegaConf

    from hydratune.card import card_metadata
    from hydratune.cli import main

    run = tmp_path / "run"
    torch.manual_seed(0)
    module = make_module(tiny_model_dir, peft="lora", overrides=["optimizer.lr=0.05"])
    module.configure_model()
    fit_repeated(module, PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer)), steps=2)
    export_artifact(module.model, tokenizer, run)
    (run / ".hydra").mkdir()
    cfg = compose(
        [f"model.pretrained_model_name_or_path={tiny_model_dir}", "model.dtype=bfloat16", "name=mine"]
    )
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / "metrics.json").write_text(json.dumps({"steps": 2, "val_loss": 3.5}))
    assert main(["merge", str(run)]) == 0
    assert "in bfloat16" in capsys.readouterr().out
    assert json.loads((run / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    card = (run / "merged" / "README.md").read_text()
    assert card_metadata(run / "merged")["library_name"] == "transformers"
    assert card.startswith("---") and "# mine" in card and "- val_loss: 3.5000" in card and "merge" in card
    # how this process loaded the tokenizer is not saved with it (review O3: merged/ had is_local, local_files_only)
    saved = json.loads((run / "merged" / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & set(saved), saved
    # transformers 4 read the rope settings as its defaults, silently (review O8); the weights were owner-only (O10)
    config = json.loads((run / "merged" / "config.json").read_text())
    assert (
        config["rope_theta"] == config["rope_parameters"]["rope_theta"]
        and config["torch_dtype"] == "bfloat16"
    )
    (run / "plain.txt").write_text("x")  # what this machine's umask gives any file the run writes
    modes = {f.name: f.stat().st_mode & 0o777 for f in (run / "merged").iterdir()}
    assert set(modes.values()) == {(run / "plain.txt").stat().st_mode & 0o777}, modes
    # an interrupted merge looked complete (weights, no tokenizer) and generate took it first (O7): it is written
    # aside, so the merged/ before it stays whole and nothing half-written is left
    import hydratune.export as export

    before = {f.name: f.read_bytes() for f in (run / "merged").iterdir()}

    def interrupted(tokenizer, folder):
        raise KeyboardInterrupt

    real = export.save_tokenizer
    export.save_tokenizer = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            main(["merge", str(run)])
    finally:
        export.save_tokenizer = real
    assert {f.name: f.read_bytes() for f in (run / "merged").iterdir()} == before
    assert main(["merge", str(run)]) == 0 and not list(run.glob(".merged.tmp-*"))  # the stale one cleared


def test_an_adapter_whose_base_is_not_here_is_one_line(tiny_model_dir, tokenizer, tmp_path):
    """generate/merge on a machine without the base (not in this hub cache, hub offline) gave transformers'
    OSError traceback (review T13)."""
    module = make_module(tiny_model_dir, peft="lora")
    module.configure_model()
    adapter = export_artifact(module.model, tokenizer, tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "acme/not-cached-here"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    from hydratune.errors import UserError

    with pytest.raises(UserError) as caught:
        load_artifact(adapter)
    message = str(caught.value)
    assert message.startswith(f"{adapter}: its base model acme/not-cached-here cannot be loaded here (")
    assert message.endswith(
        "point HF_HUB_CACHE at the cache that holds it, or set base_model_name_or_path in adapter_config.json to "
        "a copy of it"
    )
    assert "\n" not in message


def test_exports_carry_the_bases_sentencepiece_and_bpe_files(tiny_model_dir, tmp_path):
    """transformers 5 saves tokenizer.json only: adapter/ and merged/ lost the base's tokenizer.model, which
    llama.cpp's converter and SentencePiece runtimes read (review T8)."""
    import shutil

    from transformers import AutoTokenizer

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "tokenizer.model").write_bytes(b"\x0a\x05a SentencePiece model")
    (base / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = AutoTokenizer.from_pretrained(base)
    module = make_module(base, peft="lora")
    module.configure_model()
    adapter = export_artifact(module.model, tokenizer, tmp_path / "run")
    merged = merge_adapter(adapter, tmp_path / "run" / "merged")
    for folder in (adapter, merged):
        assert (folder / "tokenizer.model").read_bytes() == (base / "tokenizer.model").read_bytes()
        assert (folder / "merges.txt").read_text() == "#version: 0.2\n" and not (
            folder / "vocab.json"
        ).exists()
