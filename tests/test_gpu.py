"""On CUDA (skipped, not faked, elsewhere): the SFT step learns in bf16, and LoRA over a 4-bit or 8-bit base
trains on the GPU and exports an adapter that loads and generates on its own."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import batch_samples, fit_repeated, make_module

from hydratune.data.collate import PadCollator
from hydratune.export import export_artifact, load_artifact
from hydratune.generate import generate


class Devices(L.Callback):
    """Where the trainable weights were during training (Lightning moves the module back to the CPU after)."""

    def __init__(self):
        self.seen = set()

    def on_train_batch_end(self, trainer, pl_module, *_):
        self.seen |= {p.device.type for p in pl_module.parameters() if p.requires_grad}


def on_gpu():
    devices = Devices()
    return devices, {"accelerator": "gpu", "devices": 1, "callbacks": [devices]}


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_learns_on_gpu(precision, tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    module = make_module(tiny_model_dir, overrides=["optimizer.lr=1e-2"])
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    devices, kwargs = on_gpu()
    losses = fit_repeated(module, batch, steps=8, precision=precision, **kwargs)
    assert devices.seen == {"cuda"}
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.01, losses


QUANTIZED = [("qlora", "nf4"), ("lora", "int8")]


@pytest.mark.gpu
@pytest.mark.parametrize(("peft", "quantization"), QUANTIZED, ids=[f"{p}+{q}" for p, q in QUANTIZED])
def test_quantized_base_trains_on_gpu_and_exports(peft, quantization, tiny_model_dir, tokenizer, tmp_path):
    import bitsandbytes as bnb

    torch.manual_seed(0)
    module = make_module(tiny_model_dir, peft=peft, overrides=[f"quantization={quantization}"])
    module.configure_model()
    assert any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in module.model.modules())
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    before = {n: p.detach().cpu().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    devices, kwargs = on_gpu()
    losses = fit_repeated(module, batch, steps=3, precision="bf16-mixed", **kwargs)
    assert devices.seen == {"cuda"}
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    params = dict(module.model.named_parameters())
    assert any(not torch.equal(before[n], params[n].detach().cpu()) for n in before), "no LoRA weight moved"

    out = export_artifact(module.model, tokenizer, tmp_path)
    assert out.name == "adapter" and (out / "adapter_model.safetensors").is_file()
    model, loaded_tokenizer = load_artifact(out)
    assert isinstance(generate(model, loaded_tokenizer, ["abc"], max_new_tokens=4)[0], str)
