"""Training core: every optimizer and scheduler option trains; schedules match their formulas; the
loss is normalised per optimizer step so accumulation does not change the update."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from conftest import CONF_DIR, batch_samples, compose, fit_repeated, make_module
from omegaconf import OmegaConf

from hydratune.config import to_plain
from hydratune.data.collate import PadCollator
from hydratune.optim import build_optimizer, build_scheduler, parameter_groups

OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in (CONF_DIR / "scheduler").glob("*.yaml"))
# Full fine-tuning optimizers: they update whole weight matrices (GaLore) or take the model (LOMO).
FULL_FT_ONLY = {"galore_adamw", "galore_adamw_8bit", "lomo", "adalomo"}


# Their libraries call .cuda() / torch.cuda.synchronize() unconditionally (preflight says so on CPU).
CUDA_ONLY = {"adalomo", "galore_adamw_8bit"}
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="library hard-codes CUDA")


@pytest.mark.parametrize(
    "optimizer",
    [pytest.param(o, marks=[pytest.mark.gpu, requires_cuda]) if o in CUDA_ONLY else o for o in OPTIMIZERS],
)
def test_every_optimizer_lowers_the_loss(optimizer, tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    peft = "none" if optimizer in FULL_FT_ONLY else "lora"
    module = make_module(tiny_model_dir, optimizer, peft=peft)
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    clip = None if optimizer in {"lomo", "adalomo"} else 1.0  # LOMO cannot use Lightning's clipping
    on_gpu = {"accelerator": "gpu", "devices": 1} if optimizer in CUDA_ONLY else {}
    losses = fit_repeated(module, batch, steps=12, gradient_clip_val=clip, **on_gpu)
    assert len(losses) == 12
    assert all(math.isfinite(x) for x in losses)
    # A random-init base learns slowly under LoRA; a steady drop of 0.01 nats is the bar.
    assert losses[-1] < losses[0] - 0.01, f"{optimizer}: {losses}"


def _reference_lr(name: str, cfg: dict, step: int, total: int, warmup: int, base: float) -> float:
    """Closed-form schedules, written from their definitions (not from transformers)."""
    kw = cfg.get("kwargs") or {}
    if name == "constant":
        return base
    if warmup and step < warmup and name != "reduce_lr_on_plateau":
        return base * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if name == "constant_with_warmup":
        return base
    if name == "linear":
        return base * max(0.0, (total - step) / max(1, total - warmup))
    if name == "cosine":
        return base * max(0.0, 0.5 * (1 + math.cos(math.pi * 2 * kw["num_cycles"] * progress)))
    if name == "cosine_with_restarts":
        if progress >= 1:
            return 0.0
        return base * max(0.0, 0.5 * (1 + math.cos(math.pi * ((kw["num_cycles"] * progress) % 1.0))))
    if name == "polynomial":
        lr_end, power = kw["lr_end"], kw["power"]
        if step > total:
            return lr_end
        return (base - lr_end) * (1 - progress) ** power + lr_end
    if name == "inverse_sqrt":
        timescale = kw.get("timescale") or warmup or 10_000
        shift = timescale - warmup
        return base / math.sqrt((step + shift) / timescale)
    if name == "cosine_with_min_lr":
        rate = kw["min_lr_rate"]
        return base * (0.5 * (1 + math.cos(math.pi * progress)) * (1 - rate) + rate)
    if name == "warmup_stable_decay":
        decay = math.ceil(total * cfg["decay_ratio"])
        stable_end = total - decay
        if step < stable_end:
            return base
        p = (step - stable_end) / decay
        factor = 0.5 * (1 + math.cos(math.pi * p))
        return base * (factor * (1 - kw["min_lr_ratio"]) + kw["min_lr_ratio"])
    raise AssertionError(name)


@pytest.mark.parametrize("scheduler", [s for s in SCHEDULERS if s != "reduce_lr_on_plateau"])
def test_schedule_matches_its_formula(scheduler):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "scheduler" / f"{scheduler}.yaml"))
    cfg["warmup_steps"], total, base = 10, 100, 1e-3
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=base)
    schedule = build_scheduler(cfg, optimizer, total)
    for step in range(total):
        got = optimizer.param_groups[0]["lr"]
        want = _reference_lr(scheduler, cfg, step, total, 10, base)
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), f"{scheduler} step {step}: {got} != {want}"
        optimizer.step()
        schedule.step()


def test_reduce_lr_on_plateau_halves_after_patience():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "scheduler" / "reduce_lr_on_plateau.yaml"))
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = build_scheduler(cfg, optimizer, 100)
    for val_loss in (1.0, 0.9, 0.95, 0.95):  # patience 1: the second non-improvement reduces
        schedule.step(val_loss)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_warmup_ratio_is_used_when_steps_are_zero():
    from hydratune.optim import warmup_steps

    assert warmup_steps({"warmup_steps": 0, "warmup_ratio": 0.1}, 95) == 10
    assert warmup_steps({"warmup_steps": 7, "warmup_ratio": 0.1}, 95) == 7


def test_a_warmup_the_schedule_cannot_take_is_said(caplog):
    """scheduler=constant with scheduler.warmup_steps=4 held the lr from step 1, unsaid (review X7)."""
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=1.0)
    with caplog.at_level("WARNING", logger="hydratune.optim"):
        build_scheduler({"name": "constant", "warmup_steps": 4}, optimizer, 20)
    assert "scheduler=constant has no warmup: its 4 warmup steps are not used" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="hydratune.optim"):
        build_scheduler({"name": "constant_with_warmup", "warmup_steps": 4}, optimizer, 20)
    assert "no warmup" not in caplog.text


def test_no_weight_decay_on_bias_norm_embedding_and_loraplus_ratio():
    model = torch.nn.ModuleDict(
        {
            "embed_tokens": torch.nn.Embedding(10, 4),
            "proj": torch.nn.Linear(4, 4),
            "norm": torch.nn.LayerNorm(4),
            "lora_B": torch.nn.Linear(4, 4, bias=False),
        }
    )
    groups = parameter_groups(model.named_parameters(), weight_decay=0.1, lr=1e-3, loraplus_lr_ratio=16)
    by_decay = {id(p): g for g in groups for p in g["params"]}
    assert by_decay[id(model["proj"].weight)]["weight_decay"] == 0.1
    for p in (model["proj"].bias, model["norm"].weight, model["embed_tokens"].weight):
        assert by_decay[id(p)]["weight_decay"] == 0.0
    assert by_decay[id(model["lora_B"].weight)]["lr"] == pytest.approx(16e-3)


def test_lomo_clips_by_the_trainers_gradient_clip_val_inside_its_fused_backward(tiny_model_dir, tokenizer):
    """`optimizer=lomo` alone was refused: the default trainer.gradient_clip_val=1.0 had to be set to null by hand
    (review K12). It is LOMO's own clip_grad_norm now (clip_grad_value with the value algorithm)."""
    from hydratune.optim import hand_clipping_to_fused_backward
    from hydratune.rules import violations

    cfg = to_plain(compose(["optimizer=lomo", "peft=none"]))
    assert cfg["trainer"]["gradient_clip_val"] == 1.0 and not violations(cfg)
    hand_clipping_to_fused_backward(cfg)
    assert cfg["optimizer"]["clip_grad_norm"] == 1.0 and cfg["trainer"]["gradient_clip_val"] is None
    cfg = to_plain(
        compose(["optimizer=lomo", "trainer.gradient_clip_val=0.5", "+trainer.gradient_clip_algorithm=value"])
    )
    hand_clipping_to_fused_backward(cfg)
    assert (cfg["optimizer"]["clip_grad_value"], cfg["optimizer"]["clip_grad_norm"]) == (0.5, None)
    both = to_plain(compose(["optimizer=lomo", "optimizer.clip_grad_norm=0.3"]))  # two limits: which one?
    assert any("set one of the two" in m for m in violations(both))
    adamw = to_plain(compose([]))
    hand_clipping_to_fused_backward(adamw)  # other optimizers: Lightning clips
    assert adamw["trainer"]["gradient_clip_val"] == 1.0 and "clip_grad_norm" not in adamw["optimizer"]

    torch.manual_seed(0)  # LOMO's clipped fused backward (the global norm first) trains
    module = make_module(tiny_model_dir, "lomo", peft="none", overrides=["optimizer.clip_grad_norm=1.0"])
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    losses = fit_repeated(module, batch, steps=12, gradient_clip_val=None)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.01, losses


def test_cuda_only_optimizer_is_a_preflight_error_on_cpu():
    from hydratune.rules import violations

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the rule does not apply")
    found = violations(
        to_plain(compose(["optimizer=adalomo", "peft=none", "trainer.gradient_clip_val=null"]))
    )
    assert any("optimizer=lomo" in m for m in found)


def test_galore_projects_only_2d_weights(tiny_model_dir):
    module = make_module(tiny_model_dir, "galore_adamw", peft="none")
    module.configure_model()
    optimizer = build_optimizer(module.hparams.optimizer, module.model)
    galore = [g for g in optimizer.param_groups if "rank" in g]
    assert len(galore) == 1
    assert all(p.ndim == 2 for p in galore[0]["params"])
    others = [p for g in optimizer.param_groups if "rank" not in g for p in g["params"]]
    assert any(p.ndim == 1 for p in others)  # norms stay out of the projection


def _one_update(tiny_model_dir, samples, micro_batch: int, accumulate: int, tokenizer, drop_window=False):
    """Weights after one optimizer step of plain SGD over `samples`, split in micro-batches."""
    from hydratune.data.sampler import WindowBatchSampler, WindowDataset

    torch.manual_seed(0)
    module = make_module(
        tiny_model_dir, "sgd", peft="none", overrides=["optimizer.momentum=0.0", "optimizer.lr=0.5"]
    )
    trained = [sum(x != -100 for x in s["labels"][1:]) for s in samples]
    sampler = WindowBatchSampler(trained, micro_batch, accumulate, shuffle=False)
    collate = PadCollator(tokenizer.pad_token_id)

    def collate_fn(rows):
        batch = collate(rows)
        if drop_window:  # the usual bug: each micro-batch normalised by its own tokens, then averaged
            batch["window_tokens"] = (batch["labels"][:, 1:] != -100).sum() * accumulate
        return batch

    loader = torch.utils.data.DataLoader(WindowDataset(samples), batch_sampler=sampler, collate_fn=collate_fn)
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        accumulate_grad_batches=accumulate,
    )
    trainer.fit(module, train_dataloaders=loader)
    return torch.cat([p.detach().flatten() for p in module.model.parameters()])


def test_accumulation_gives_the_same_update(tiny_model_dir, tokenizer):
    samples = batch_samples(tokenizer, n=8, seed=1)
    full = _one_update(tiny_model_dir, samples, 8, 1, tokenizer)
    for micro, accumulate in ((2, 4), (1, 8)):
        split = _one_update(tiny_model_dir, samples, micro, accumulate, tokenizer)
        assert torch.allclose(full, split, atol=1e-6), f"{micro}x{accumulate}: {(full - split).abs().max()}"
    # The test can fail: a mean of per-micro-batch means (what the window count fixes) moves the weights differently.
    naive = _one_update(tiny_model_dir, samples, 1, 8, tokenizer, drop_window=True)
    assert (full - naive).abs().max() > 1e-4


def test_loraplus_ratio_from_config_reaches_the_optimizer(tiny_model_dir):
    module = make_module(tiny_model_dir, overrides=["optimizer.loraplus_lr_ratio=16", "optimizer.lr=1e-3"])
    module.configure_model()
    optimizer = build_optimizer(module.hparams.optimizer, module.model)
    lrs = sorted({group["lr"] for group in optimizer.param_groups})
    assert lrs == pytest.approx([1e-3, 16e-3])
    b_params = {id(p) for n, p in module.model.named_parameters() if "lora_B" in n}
    fast = [g for g in optimizer.param_groups if g["lr"] == pytest.approx(16e-3)][0]
    assert {id(p) for p in fast["params"]} == b_params


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_fused_adamw_clips_under_bf16_mixed(precision, tiny_model_dir, tokenizer):
    """optimizer=adamw_torch_fused with the default clipping crashed after the model loaded wherever the CPU
    has bf16 (precision auto = bf16-mixed): Lightning refuses to clip any fused optimizer under mixed
    precision, though bf16 has no loss scaler. The gradients are clipped to the norm asked."""
    from hydratune.callbacks import GradNorm

    torch.manual_seed(0)
    module = make_module(tiny_model_dir, "adamw_torch_fused")
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    norms = []

    class AfterClipping(L.Callback):  # the gradients the optimizer steps with, after clipping
        def on_train_start(self, trainer, pl_module):
            def measure(optimizer, args, kwargs):
                grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

            trainer.optimizers[0].register_step_post_hook(measure)  # step(closure): after it

    losses = fit_repeated(module, batch, steps=6, gradient_clip_val=0.01, precision=precision,
                          callbacks=[GradNorm(), AfterClipping()])  # fmt: skip
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert max(norms) <= 0.01 * 1.001, norms  # clipped: a LoRA gradient's norm is far above 0.01 here
