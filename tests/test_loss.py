"""Our token loss agrees with the reference computed by transformers, and the fused loss from hidden states with
the loss from logits (value and gradients)."""

from __future__ import annotations

import pytest
import torch

from hydratune.losses import token_nll


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


def _reference_nll(hidden, weight, labels):
    """The plain path: full logits, a float32 upcast, cross-entropy."""
    import torch.nn.functional as F

    logits = (hidden @ weight.T)[:, :-1].float()
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    )


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("mode", ["fp32", "bf16-autocast", "bf16-weights"])
@pytest.mark.parametrize("chunk_elements", [7 * 500, 2**23])  # several chunks, then one
def test_linear_cross_entropy_matches_plain_loss_and_gradients(mode, chunk_elements, device):
    from hydratune.losses import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    hidden0, weight0 = torch.randn(3, 17, 32, generator=g), torch.randn(500, 32, generator=g) * 0.1
    if mode == "bf16-weights":
        hidden0, weight0 = hidden0.bfloat16(), weight0.bfloat16()
    labels = torch.randint(0, 500, (3, 17), generator=g)
    labels[0, :5] = -100
    labels[2, -3:] = -100
    hidden0, weight0, labels = hidden0.to(device), weight0.to(device), labels.to(device)
    results = []
    for fused in (False, True):
        hidden, weight = hidden0.clone().requires_grad_(), weight0.clone().requires_grad_()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=mode == "bf16-autocast"):
            if fused:
                nll, count = linear_cross_entropy(hidden, weight, labels, chunk_elements=chunk_elements)
                assert count.item() == int((labels[:, 1:] != -100).sum())
            else:
                nll = _reference_nll(hidden, weight, labels)
        (0.5 * nll).backward()  # a scaled loss: backward must use the incoming gradient
        results.append((nll.detach().float(), hidden.grad.float(), weight.grad.float()))
    (plain_nll, plain_dh, plain_dw), (nll, dh, dw) = results
    # bf16 matmuls round differently when a gradient is summed over chunks instead of in one matmul.
    rel = 1e-5 if mode == "fp32" else 1e-2
    assert nll.item() == pytest.approx(plain_nll.item(), rel=1e-5)
    assert (dh - plain_dh).abs().max() <= rel * plain_dh.abs().max()
    assert (dw - plain_dw).abs().max() <= rel * plain_dw.abs().max()


def test_linear_cross_entropy_without_gradients_and_without_trained_tokens():
    from hydratune.losses import linear_cross_entropy

    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(2, 9, 16, generator=g), torch.randn(40, 16, generator=g)
    labels = torch.randint(0, 40, (2, 9), generator=g)
    with torch.no_grad():
        nll, _ = linear_cross_entropy(hidden, weight, labels, chunk_elements=40 * 4)
    assert nll.item() == pytest.approx(_reference_nll(hidden, weight, labels).item(), rel=1e-5)
    nll, count = linear_cross_entropy(hidden.requires_grad_(), weight, torch.full((2, 9), -100))
    nll.backward()
    assert nll.item() == 0.0 and count.item() == 0 and hidden.grad.abs().sum() == 0


@pytest.mark.parametrize("mode", ["fp32", "bf16-autocast"])
def test_linear_cross_entropy_is_finite_where_the_labels_probability_underflows(mode):
    """Labels 120-300 nats below the top logit: their softmax is 0 in float32, their log-probability is
    not; the loss and gradients match the log-softmax reference instead of going infinite."""
    from hydratune.losses import linear_cross_entropy, linear_sequence_logps, sequence_logps

    g = torch.Generator().manual_seed(3)
    weight = torch.randn(300, 8, generator=g)
    hidden0 = torch.randn(2, 6, 8, generator=g) * 60  # logits spread over hundreds of nats
    logits = hidden0 @ weight.T
    labels = logits.argmin(-1).roll(-1, dims=1)  # each position's least likely token as the next label
    labels[:, 0] = -100
    gaps = (logits.amax(-1) - logits.amin(-1))[:, :-1]
    assert gaps.min() > 120  # exp(-120) is 0 in float32
    out = []
    for fused in (False, True):
        hidden = hidden0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            if fused:
                nll, _ = linear_cross_entropy(hidden, weight, labels, chunk_elements=4 * 300)
                logps, _ = linear_sequence_logps(hidden.detach(), weight, labels)
            else:
                nll = _reference_nll(hidden, weight, labels)
                logps, _ = sequence_logps(hidden.detach() @ weight.T, labels)
        nll.backward()
        out.append((nll.detach().float(), hidden.grad, logps))
    (plain, plain_grad, plain_logps), (fused, grad, fused_logps) = out
    assert torch.isfinite(fused) and fused.item() > 1000
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)
    torch.testing.assert_close(fused_logps, plain_logps, atol=1e-2, rtol=1e-5)
    assert (grad - plain_grad).abs().max() <= 1e-2 * plain_grad.abs().max()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_sft_fused_loss_matches_logits_path_with_lora(tiny_model_dir, tokenizer, checkpointing):
    """SFTModule's loss from hidden states (the default) gives the loss and LoRA gradients of the logits path."""
    from conftest import batch_samples, make_module

    from hydratune.data.collate import PadCollator

    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    out = {}
    for fused in (False, True):
        torch.manual_seed(0)
        module = make_module(tiny_model_dir)
        module.hparams.fused_loss = fused
        module.hparams.gradient_checkpointing = checkpointing
        module.configure_model()
        assert (module.output_layer() is not None) is True  # a Llama: its logits are lm_head(hidden)
        with torch.no_grad():  # LoRA B starts at zero; give it values so every gradient is non-zero
            for name, p in module.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.02, generator=torch.Generator().manual_seed(1))
        nll, count = module.nll(batch)
        (nll / count).backward()
        out[fused] = (nll.item(), {n: p.grad for n, p in module.model.named_parameters() if p.requires_grad})
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-6)
    assert out[True][1].keys() == out[False][1].keys()
    for name, grad in out[False][1].items():
        assert torch.allclose(out[True][1][name], grad, atol=1e-6, rtol=1e-4), name


def test_output_layer_is_refused_when_the_logits_are_more_than_lm_head(tiny_model_dir):
    """Model families outside the plain list (soft-capping, scaling) and adapted output layers use the
    logits path."""
    from conftest import make_module

    module = make_module(tiny_model_dir, overrides=["peft.config.target_modules=[q_proj,lm_head]"])
    module.configure_model()
    assert module.output_layer() is None  # LoRA on lm_head: the weight alone is not the layer
    module = make_module(tiny_model_dir)
    module.configure_model()
    module.model.get_base_model().config.model_type = "gemma2"  # final logit soft-capping
    assert module.output_layer() is None


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("mode", ["fp32", "bf16-autocast"])
def test_linear_sequence_logps_matches_sequence_logps(average, mode):
    """Per-row answer log-probs from hidden states and a frozen output layer equal those from the logits,
    gradients for the hidden states too (each row weighted differently, so the per-token scaling counts)."""
    from hydratune.losses import linear_sequence_logps, sequence_logps

    g = torch.Generator().manual_seed(2)
    hidden0, weight = torch.randn(4, 13, 32, generator=g), torch.randn(700, 32, generator=g) * 0.1
    labels = torch.randint(0, 700, (4, 13), generator=g)
    labels[0, :4], labels[1, -2:], labels[3, :] = -100, -100, -100  # a row with no answer token
    out = []
    for fused in (False, True):
        hidden = hidden0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            if fused:
                logps, counts = linear_sequence_logps(hidden, weight, labels, average, chunk_elements=5 * 700)
            else:
                logps, counts = sequence_logps(hidden @ weight.T, labels, average)
        (logps * torch.arange(1.0, 5.0)).sum().backward()
        out.append((logps.detach(), counts, hidden.grad))
    (plain, plain_counts, plain_grad), (fused, fused_counts, fused_grad) = out
    assert torch.equal(plain_counts, fused_counts) and fused[3] == 0
    torch.testing.assert_close(fused, plain, atol=1e-4, rtol=1e-5)
    rel = 1e-5 if mode == "fp32" else 1e-2
    assert (fused_grad - plain_grad).abs().max() <= rel * plain_grad.abs().max()
    with pytest.raises(ValueError, match="frozen output layer"):
        linear_sequence_logps(hidden0, weight.clone().requires_grad_(), labels)
