"""Our token loss agrees with the reference computed by transformers."""

from __future__ import annotations

import torch

from hydratune.tasks.sft.module import token_nll


def test_token_nll_matches_transformers_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    input_ids = torch.tensor([[1, 20, 21, 22, 23, 2, 0, 0], [1, 30, 31, 32, 33, 34, 35, 2]])
    labels = input_ids.clone()
    labels[:, :3] = -100
    labels[0, 6:] = -100
    attention_mask = (torch.arange(8) < torch.tensor([[6], [8]])).long()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    nll, count = token_nll(out.logits, labels)
    assert count.item() == int((labels[:, 1:] != -100).sum())
    assert torch.allclose(nll / count, out.loss, atol=1e-5)
