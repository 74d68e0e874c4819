"""GRPO sampling on a tiny random model: stop tokens, left padding, seeds."""

from __future__ import annotations

import pytest
import torch

from hydratune.tasks.grpo.sampling import encode_prompts, pick_tokens, sample

PROMPTS = ["a", "hello there", "xyz: 12 -> ", "The quick brown fox"]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture
def fresh_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompts_are_left_padded(tokenizer):
    ids, mask = encode_prompts(tokenizer, ["ab", "abcd"])
    assert mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert ids[0, :2].tolist() == [tokenizer.pad_token_id] * 2 and ids[0, 2] == tokenizer.bos_token_id
    assert ids[0, 3:].tolist() == ids[1, 1:3].tolist()  # "ab" after BOS in both rows


@pytest.mark.parametrize("method", ["loop", "generate"])
def test_left_padded_batch_gives_the_unpadded_greedy_completions(model, tokenizer, method):
    batch = sample(model, tokenizer, PROMPTS, 1, 12, temperature=0.0, method=method)
    for i, prompt in enumerate(PROMPTS):
        alone = sample(model, tokenizer, [prompt], 1, 12, temperature=0.0, method=method)
        assert batch.completion_ids[i].tolist() == alone.completion_ids[0].tolist()
        assert batch.texts[i] == alone.texts[0]
    # Both implementations decode the same tokens.
    other = sample(model, tokenizer, PROMPTS, 1, 12, temperature=0.0, method="generate")
    assert torch.equal(batch.completion_ids, other.completion_ids)


def test_rows_stop_at_eos_and_are_padded_after_it(model, fresh_tokenizer):
    tok = fresh_tokenizer
    free = sample(model, tok, PROMPTS, 1, 16, temperature=0.0)
    assert free.completion_mask.all()  # the random model never says EOS by itself
    # Make the second token of row 0 the EOS: row 0 stops after 2 tokens, the others where it appears.
    eos = tok.convert_ids_to_tokens(int(free.completion_ids[0, 1]))
    tok.eos_token = eos
    eos_id = tok.eos_token_id
    for method in ("loop", "generate"):
        s = sample(model, tok, PROMPTS, 1, 16, temperature=0.0, method=method)
        for i in range(len(PROMPTS)):
            row = free.completion_ids[i].tolist()
            end = row.index(eos_id) + 1 if eos_id in row else len(row)
            assert s.completion_mask[i].tolist()[:end] == [1] * end
            assert s.completion_mask[i, end:].sum() == 0
            assert s.completion_ids[i, :end].tolist() == row[:end]
            assert (s.completion_ids[i, end:] == tok.pad_token_id).all()
        assert s.completion_mask[0].sum() == 2
        assert s.texts[0] == tok.decode(free.completion_ids[0, :2], skip_special_tokens=True)


def test_extra_stop_tokens_end_a_completion_stay_in_the_text_and_leave_the_answer(model, tokenizer):
    free = sample(model, tokenizer, PROMPTS[:1], 1, 16, temperature=0.0)
    stop = int(free.completion_ids[0, 2])
    s = sample(model, tokenizer, PROMPTS[:1], 1, 16, temperature=0.0, stop_token_ids=[stop])
    first = free.completion_ids[0].tolist().index(stop)
    assert s.completion_ids.shape[1] == first + 1  # the loop stops once every row has stopped
    assert s.texts[0] == tokenizer.decode(free.completion_ids[0, : first + 1])
    # Rewards read the answer without the stop token that ended it; the mask (what the loss trains) keeps it.
    assert s.answers[0] == tokenizer.decode(free.completion_ids[0, :first])
    assert int(s.completion_mask[0].sum()) == first + 1
    unstopped = sample(model, tokenizer, PROMPTS[:1], 1, first, temperature=0.0, stop_token_ids=[stop])
    assert unstopped.answers == unstopped.texts  # cut by max_new_tokens: nothing to take off


@pytest.mark.parametrize("method", ["loop", "generate"])
def test_sampling_is_a_function_of_the_seed(model, tokenizer, method):
    state = torch.random.get_rng_state()
    a = sample(model, tokenizer, PROMPTS, 4, 10, temperature=1.0, seed=7, method=method)
    torch.manual_seed(123)  # the caller's global RNG plays no part
    b = sample(model, tokenizer, PROMPTS, 4, 10, temperature=1.0, seed=7, method=method)
    c = sample(model, tokenizer, PROMPTS, 4, 10, temperature=1.0, seed=8, method=method)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # Rows i*G .. i*G+G-1 belong to prompt i and differ from each other.
    assert a.completion_ids.shape[0] == 16 and len({tuple(r) for r in a.completion_ids[:4].tolist()}) > 1
    assert torch.equal(a.prompt_ids[0], a.prompt_ids[3]) and not torch.equal(a.prompt_ids[3], a.prompt_ids[4])
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    sample(model, tokenizer, PROMPTS, 2, 4, seed=1, method=method)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(pick_tokens(logits, 1.0, 0.7, g)) for _ in range(200)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.7: tokens 2 and 3 are cut
    assert {int(pick_tokens(logits, 1.0, 0.1, g)) for _ in range(50)} == {0}
    assert int(pick_tokens(logits, 0.0, 1.0, None)) == 0


def test_training_forward_scores_each_completion_as_if_it_were_alone(model, tokenizer):
    """Samples.model_inputs (left-padded prompt + right-padded completion, positions of real tokens):
    the completion log-probs equal those of the unpadded prompt + completion in a forward of its own."""
    from hydratune.tasks.grpo.loss import token_logps

    s = sample(model, tokenizer, PROMPTS, 2, 8, temperature=1.0, seed=3, stop_token_ids=[5, 6, 7, 8])
    assert not s.completion_mask.all()  # some rows stopped early: right padding is exercised
    width = s.prompt_ids.shape[1]
    with torch.no_grad():
        logps = token_logps(
            model(**s.model_inputs(), use_cache=False).logits[:, width - 1 : -1], s.completion_ids
        )
        for i in range(len(s.texts)):
            prompt = s.prompt_ids[i][s.prompt_mask[i].bool()]
            completion = s.completion_ids[i][s.completion_mask[i].bool()]
            ids = torch.cat([prompt, completion])[None]
            alone = token_logps(
                model(input_ids=ids, use_cache=False).logits[:, len(prompt) - 1 : -1], completion[None]
            )
            assert torch.allclose(logps[i][s.completion_mask[i].bool()], alone[0], atol=1e-5)
