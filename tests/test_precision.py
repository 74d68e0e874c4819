"""Precision and memory switches: bf16 on CPU trains, fp16 falls back with a message, gradient
checkpointing with LoRA gives the same loss and gradients as without."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import batch_samples, fit_repeated, make_module

from hydratune.data.collate import PadCollator
from hydratune.train import cpu_fallbacks


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "32-true"])
def test_precisions_train_on_cpu(precision, tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    module = make_module(tiny_model_dir, overrides=["optimizer.lr=1e-2"])
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    losses = fit_repeated(module, batch, steps=6, precision=precision)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for CPU runs")
def test_fp16_on_cpu_falls_back_to_bf16_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = cpu_fallbacks({"accelerator": "auto", "precision": "16-mixed"})
    assert cfg["precision"] == "bf16-mixed"
    assert "needs a GPU" in caplog.text


@pytest.mark.gpu
def test_fp16_mixed_trains_on_gpu(tiny_model_dir, tokenizer):
    module = make_module(tiny_model_dir, overrides=["optimizer.lr=1e-2"])
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    from conftest import Repeat
    from lightning import Trainer

    trainer = Trainer(
        max_steps=4,
        accelerator="gpu",
        devices=1,
        precision="16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    assert trainer.global_step == 4


def _loss_and_grads(tiny_model_dir, tokenizer, checkpointing: bool):
    from hydratune.losses import token_nll

    torch.manual_seed(0)
    module = make_module(tiny_model_dir)
    module.hparams.gradient_checkpointing = checkpointing
    module.configure_model()
    # LoRA B starts at zero, so give it values: otherwise the A gradients are all zero.
    with torch.no_grad():
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02, generator=torch.Generator().manual_seed(1))
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    nll, count = token_nll(module(batch), batch["labels"])
    loss = nll / count
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad}
    return loss.item(), grads, module.model


def test_gradient_checkpointing_with_lora_matches(tiny_model_dir, tokenizer):
    loss_plain, grads_plain, _ = _loss_and_grads(tiny_model_dir, tokenizer, False)
    loss_ckpt, grads_ckpt, model = _loss_and_grads(tiny_model_dir, tokenizer, True)
    assert model.base_model.model.model.gradient_checkpointing or model.is_gradient_checkpointing
    assert loss_ckpt == pytest.approx(loss_plain, abs=1e-6)
    assert grads_plain.keys() == grads_ckpt.keys()
    nonzero = 0
    for name in grads_plain:
        assert torch.allclose(grads_plain[name], grads_ckpt[name], atol=1e-6), name
        nonzero += bool(grads_ckpt[name].abs().sum() > 0)
    assert nonzero == len(grads_plain), "every LoRA matrix must receive a gradient through checkpointing"


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {}\nbogomips\t: 4000\n"


@pytest.mark.parametrize(
    "flag, feature", [("avx512_bf16", "AVX512-BF16"), ("amx_bf16 avx512_bf16", "AMX-BF16"), ("", None)]
)
def test_cpu_bf16_probe_reads_the_flags_line(flag, feature):
    from hydratune.precision import cpu_bf16_feature

    assert cpu_bf16_feature(CPUINFO.format(flag)) == feature


@pytest.mark.parametrize(
    "feature, expected",
    [
        ("AVX512-BF16", "bf16-mixed (auto: CPU has AVX512-BF16)"),
        (None, "32-true (auto: CPU has no AVX512-BF16 or AMX-BF16)"),
    ],
)
def test_auto_precision_follows_the_cpu(feature, expected, monkeypatch):
    from hydratune import precision

    monkeypatch.delenv("HYDRATUNE_CPU_BF16", raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: feature)
    monkeypatch.setattr(
        precision, "torch_bf16", lambda: (True, "AVX512")
    )  # whatever this machine's torch runs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("auto", "cpu"):
        requested = {"accelerator": accelerator, "precision": "auto"}
        chosen, _ = precision.choose_precision(requested)
        assert precision.precision_note(requested, chosen["precision"]) == expected
    # A precision given by name is kept, whatever the CPU.
    assert (
        precision.choose_precision({"accelerator": "cpu", "precision": "32-true"})[0]["precision"]
        == "32-true"
    )


def test_a_cpu_whose_bf16_torch_does_not_run_trains_in_fp32(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 (a container's or an HPC module's cap) on an AMX CPU: auto chose bf16 from the flags
    and trained 3.6x slower, saying "CPU has AMX-BF16" (review N3)."""
    from hydratune import precision

    monkeypatch.delenv("HYDRATUNE_CPU_BF16", raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: "AMX-BF16")
    monkeypatch.setattr(precision, "torch_bf16", lambda: (False, "AVX2"))
    chosen, reason = precision.choose_precision({"accelerator": "cpu", "precision": "auto"})
    assert chosen["precision"] == "32-true"
    assert reason == (
        "auto: CPU has AMX-BF16, but torch here runs AVX2 kernels without bf16 (ATEN_CPU_CAPABILITY or "
        "ONEDNN_MAX_CPU_ISA caps them), where bf16 is emulated"
    )
    assert isinstance(precision.torch_bf16()[0], bool)  # this machine's own answer, whichever it is


@pytest.mark.parametrize(("value", "chosen"), [("0", "32-true"), ("false", "32-true"), ("OFF", "32-true"),
                                               ("no", "32-true"), ("1", "bf16-mixed"), ("true", "bf16-mixed"),
                                               ("yes", "bf16-mixed")])  # fmt: skip
def test_the_bf16_switch_reads_the_usual_spellings_and_refuses_others(value, chosen, monkeypatch):
    """HYDRATUNE_CPU_BF16=false was read as unset: bf16 ran where it was turned off (review N4)."""
    from hydratune import precision
    from hydratune.errors import UserError

    monkeypatch.setenv("HYDRATUNE_CPU_BF16", value)
    assert precision.choose_precision({"accelerator": "cpu", "precision": "auto"}) == (
        {"accelerator": "cpu", "precision": chosen},
        f"auto: HYDRATUNE_CPU_BF16={value}",
    )
    monkeypatch.setenv("HYDRATUNE_CPU_BF16", "2")
    with pytest.raises(
        UserError, match=r"^HYDRATUNE_CPU_BF16=2: use 1 \(bf16-mixed\) or 0 \(32-true\), or unset"
    ):
        precision.choose_precision({"accelerator": "cpu", "precision": "auto"})


@pytest.mark.slow
def test_run_summary_says_which_precision_ran_and_why(tmp_path):
    import json

    from conftest import run_cli

    run_dir = tmp_path / "run"
    result = run_cli(
        ["train.py", f"hydra.run.dir={run_dir}", "trainer.max_steps=2", "logger=none", "export.merge=false"],
        env={"HYDRATUNE_CPU_BF16": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        json.loads((run_dir / "metrics.json").read_text())["precision"]
        == "bf16-mixed (auto: HYDRATUNE_CPU_BF16=1)"
    )
    assert "precision: bf16-mixed (auto: HYDRATUNE_CPU_BF16=1)" in (run_dir / "train.log").read_text()


def test_adapters_of_a_float32_model_skip_the_input_cast_and_compute_the_same(tiny_model_dir, tokenizer):
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import AutoModelForCausalLM

    from hydratune.model import skip_needless_input_casts

    def lora(dtype):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
        return get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))

    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    reference, model = lora(torch.float32), skip_needless_input_casts(lora(torch.float32))
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and not any(m.cast_input_dtype_enabled for m in layers)
    for autocast in (False, True):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits)
    # A bf16 base keeps the cast: its fp32 adapters need float32 inputs outside autocast.
    half = skip_needless_input_casts(lora(torch.bfloat16))
    assert all(
        getattr(m, "cast_input_dtype_enabled", True) for m in half.modules() if isinstance(m, BaseTunerLayer)
    )


def test_enabling_checkpointing_prints_no_deprecation(tiny_model_dir):
    """hydratune calls transformers' current checkpointing API: nothing of the library's on a run's stderr."""
    import warnings

    from transformers import AutoModelForCausalLM

    from hydratune.model import enable_gradient_checkpointing

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enable_gradient_checkpointing(model)
    assert model.model.gradient_checkpointing


def _adapted(tiny_model_dir, share: bool, checkpointing: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hydratune.model import (
        cast_shared_inputs_once,
        enable_gradient_checkpointing,
        skip_needless_input_casts,
    )

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if checkpointing:
        enable_gradient_checkpointing(base)
    lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    model = skip_needless_input_casts(get_peft_model(base, lora)).train()
    return cast_shared_inputs_once(model) if share else model


def _casts_logits_grads(model, inputs, autocast: bool, dtype=torch.bfloat16):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            logits = model(**inputs).logits
        logits.float().square().mean().backward()
    casts = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    return casts, logits.detach(), grads


@pytest.mark.parametrize("checkpointing", [False, True])
def test_linear_layers_share_one_autocast_copy_of_their_input(checkpointing, tiny_model_dir, tokenizer):
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    reference = _adapted(tiny_model_dir, share=False, checkpointing=checkpointing)
    shared = _adapted(tiny_model_dir, share=True, checkpointing=checkpointing)
    layers = reference.config.num_hidden_layers

    casts_ref, logits_ref, grads_ref = _casts_logits_grads(reference, inputs, autocast=True)
    casts, logits, grads = _casts_logits_grads(shared, inputs, autocast=True)
    # q, k, v, gate and up, each with its adapter, read two float32 tensors per decoder layer: ten casts
    # there become two in the forward (and the same again when checkpointing recomputes it).
    assert casts <= casts_ref - 8 * layers
    assert torch.equal(logits, logits_ref)  # the same bf16 values reach every matmul
    # Only the gradients' summation changes (in bf16 before one cast back, not after ten).
    assert ((grads - grads_ref).norm() / grads_ref.norm()).item() < 1e-2

    # Without autocast the hook does nothing: float32 results to the bit.
    for model in (reference, shared):
        model.zero_grad(set_to_none=True)
    _, logits_ref, grads_ref = _casts_logits_grads(reference, inputs, autocast=False)
    _, logits, grads = _casts_logits_grads(shared, inputs, autocast=False)
    assert torch.equal(logits, logits_ref) and torch.equal(grads, grads_ref)


def test_the_shared_cast_in_a_deep_copy_in_inference_mode_and_not_in_a_bf16_model(tiny_model_dir):
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hydratune.model import cast_shared_inputs_once

    model = _adapted(tiny_model_dir, share=True, checkpointing=False)
    reference = _adapted(tiny_model_dir, share=False, checkpointing=False)
    twin = copy.deepcopy(model)  # what a task's frozen reference copy does
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(input_ids=ids).logits
        assert torch.equal(twin(input_ids=ids).logits, expected)
        assert torch.equal(model(input_ids=ids).logits, expected)
    # Lightning evaluates under inference_mode, whose tensors have no version counter.
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model(input_ids=ids).logits, expected)
    # A copy made without gradients is not handed to a layer that needs them for the same tensor.
    x = torch.randn(2, 3, model.config.hidden_size, requires_grad=True)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            q_proj(x)
        q_proj(x).float().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # fp16 autocast keeps its own casts (and the float32 summation of their gradients).
    casts_ref, _, _ = _casts_logits_grads(reference, {"input_ids": ids}, autocast=True, dtype=torch.float16)
    casts, _, _ = _casts_logits_grads(model, {"input_ids": ids}, autocast=True, dtype=torch.float16)
    assert casts == casts_ref

    half = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    half = cast_shared_inputs_once(get_peft_model(half, LoraConfig(r=4, target_modules="all-linear")))
    assert not any(m._forward_pre_hooks for m in half.modules())
