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
        assert any("hydratune[deepspeed]" in m for m in found)
    assert not any("hydratune[deepspeed]" in m for m in violations(to_plain(compose(["trainer=ddp"]))))


def test_deepspeed_with_quantization_is_an_error():
    cfg = to_plain(compose(["trainer=deepspeed_zero2", "peft=qlora"]))
    assert any(m.startswith("trainer.strategy, quantization") for m in violations(cfg))


def test_samples_are_not_generated_on_one_rank_while_weights_are_sharded():
    """A generate() on rank 0 alone would hang FSDP and ZeRO-3 (every rank gathers each layer's weights)."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

    from hydratune.callbacks import params_sharded

    def zero(stage):
        strategy = object.__new__(DeepSpeedStrategy)  # without deepspeed installed: only its config is read
        strategy.config = {"zero_optimization": {"stage": stage}}
        return strategy

    def sharded(strategy, world_size=2):
        return params_sharded(SimpleNamespace(world_size=world_size, strategy=strategy))

    assert sharded(FSDPStrategy())
    assert sharded(zero(3))
    assert not sharded(FSDPStrategy(sharding_strategy="NO_SHARD"))
    assert not sharded(zero(2))
    assert not sharded(DDPStrategy())
    assert not sharded(FSDPStrategy(), world_size=1)
