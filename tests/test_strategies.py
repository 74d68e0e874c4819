"""Multi-device presets: FSDP wraps the model's decoder blocks; DeepSpeed presets fail fast without DeepSpeed."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import compose

from hydratune.config import to_plain
from hydratune.rules import violations


def test_decoder_layer_classes_of_a_llama(tiny_model_dir):
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from hydratune.model import decoder_layer_classes

    assert decoder_layer_classes({"pretrained_model_name_or_path": str(tiny_model_dir)}) == {
        LlamaDecoderLayer
    }


def test_fsdp_preset_builds_a_strategy_wrapping_decoder_layers(tiny_model_dir):
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from hydratune.train import split_strategy

    trainer_cfg = to_plain(compose(["trainer=fsdp"]).trainer)
    rest, extra = split_strategy(trainer_cfg, {"pretrained_model_name_or_path": str(tiny_model_dir)})
    assert "strategy" not in rest
    strategy = extra["strategy"]
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}


@pytest.mark.parametrize("preset", ["deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"])
def test_deepspeed_presets(preset):
    cfg = to_plain(compose([f"trainer={preset}"]))
    assert "deepspeed_stage" in cfg["trainer"]["strategy"]
    found = violations(cfg)
    if importlib.util.find_spec("deepspeed") is None:
        assert any(".[deepspeed]" in m for m in found)
    assert not any(".[deepspeed]" in m for m in violations(to_plain(compose(["trainer=ddp"]))))


def test_deepspeed_with_quantization_is_an_error():
    cfg = to_plain(compose(["trainer=deepspeed_zero2", "peft=qlora"]))
    assert any(m.startswith("trainer.strategy, quantization") for m in violations(cfg))


def test_samples_are_not_generated_where_a_generate_would_break_the_run():
    """FSDP: a generate() outside the root's forward makes every wrapped layer a root (the next checkpoint
    fails), and on several ranks would hang; ZeRO-3 on several ranks would hang."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

    from hydratune.callbacks import samples_unsafe

    def zero(stage):
        strategy = object.__new__(DeepSpeedStrategy)  # without deepspeed installed: only its config is read
        strategy.config = {"zero_optimization": {"stage": stage}}
        return strategy

    def unsafe(strategy, world_size=2):
        return samples_unsafe(SimpleNamespace(world_size=world_size, strategy=strategy))

    assert unsafe(FSDPStrategy()) and unsafe(FSDPStrategy(), world_size=1)
    assert unsafe(zero(3))
    assert not unsafe(zero(3), world_size=1)
    assert not unsafe(zero(2))
    assert not unsafe(DDPStrategy())


def _clip_on_rank(rank: int, world_size: int, init: str, grads: list, out: str) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    from hydratune.sharding import clip_sharded_grad_norm

    # A rank left out of the all-reduce makes the others fail after the timeout instead of hanging the test.
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60)
    )
    try:
        shard = grads[rank::world_size]  # this rank's pieces of the gradients
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in shard]
        for p, g in zip(params, shard):
            p.grad = g.clone()
        norm = clip_sharded_grad_norm(params, 1.0, sharded=True)
        torch.save({"norm": norm, "grads": [p.grad for p in params]}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("count", [4, 1])
def test_gradient_clipping_under_fsdp_takes_the_norm_over_every_shard(count, tmp_path):
    """trainer.gradient_clip_val with trainer=fsdp: the clipped gradients are those of one whole model, also
    when one rank's shard holds no gradient at all (count=1: rank 1 has none, and must still join the sum)."""
    import torch
    import torch.multiprocessing as mp

    from hydratune.sharding import clip_sharded_grad_norm

    grads = [torch.randn(5, 3, generator=torch.Generator().manual_seed(i)) * (i + 2) for i in range(count)]
    whole = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(whole, grads):
        p.grad = g.clone()
    expected_norm = torch.nn.utils.clip_grad_norm_(whole, 1.0)
    assert expected_norm > 1.0  # so the clip does something

    alone = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(alone, grads):
        p.grad = g.clone()
    assert torch.allclose(clip_sharded_grad_norm(alone, 1.0, sharded=False), expected_norm)
    assert all(torch.allclose(a.grad, w.grad, atol=1e-6) for a, w in zip(alone, whole))

    out = str(tmp_path / "rank")
    mp.spawn(_clip_on_rank, args=(2, f"file://{tmp_path / 'init'}", grads, out), nprocs=2)
    shards = [torch.load(f"{out}.{rank}") for rank in range(2)]
    for rank, shard in enumerate(shards):
        assert torch.allclose(shard["norm"], expected_norm)
        for got, want in zip(shard["grads"], whole[rank::2]):
            assert torch.allclose(got, want.grad, atol=1e-6)


def _rng_on_rank(rank: int, world_size: int, init: str, out: str) -> None:
    import datetime
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist

    from hydratune.checkpoint import TrainingRNG

    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60)
    )
    try:
        trainer = SimpleNamespace(global_rank=rank, world_size=world_size)
        saving = TrainingRNG()
        saving.setup(trainer, None, "fit")
        torch.manual_seed(100 + rank)  # each rank's dropout stream is its own
        torch.rand(rank + 1)  # and has drawn a different amount
        saving.on_train_batch_end(trainer, None, None, None, 0)
        expected = torch.rand(4)  # what this rank draws after the saved step
        state = saving.state_dict()  # collective, as Lightning's checkpoint dump is on every rank
        if rank == 0:
            torch.save(state, f"{out}.ckpt")  # only rank 0 writes the checkpoint
        dist.barrier()
        resumed = TrainingRNG()
        resumed.setup(trainer, None, "fit")
        resumed.load_state_dict(torch.load(f"{out}.ckpt", weights_only=False))
        torch.manual_seed(0)  # model building and the loaders draw in between
        resumed.on_train_batch_start(trainer, None, None, 0)
        torch.save({"expected": expected, "got": torch.rand(4)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_each_rank_resumes_its_own_random_stream(tmp_path):
    """DDP with LoRA dropout resumed inexactly: only rank 0 writes the checkpoint, and every rank got rank 0's
    RNG state back (R19). Each rank's state now travels in the checkpoint and comes back to that rank."""
    import torch
    import torch.multiprocessing as mp

    out = str(tmp_path / "rng")
    mp.spawn(_rng_on_rank, args=(2, f"file://{tmp_path / 'init'}", out), nprocs=2)
    draws = [torch.load(f"{out}.{rank}") for rank in range(2)]
    for draw in draws:
        assert torch.equal(draw["expected"], draw["got"])
    assert not torch.equal(draws[0]["got"], draws[1]["got"])
