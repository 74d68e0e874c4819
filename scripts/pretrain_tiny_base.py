"""Pretrain the tiny Llama base model that ships in assets/tiny-llama.

What: a 4-layer, hidden-128 Llama with a character-level tokenizer, trained from scratch (full
fine-tuning, plain PyTorch) on hydratune's synthetic corpus of string transformations written as
`op: word -> result` lines. LoRA on a random-init model cannot learn anything in a CPU minute (the
frozen weights carry no signal), so the default SFT run adapts this base instead: it learns the
Alpaca prompt format and which instruction means which operation.
Hardware: CPU, 2 threads. Expected time: ~10 minutes on 2 free cores. Deterministic for a given seed and
torch build.

    python scripts/pretrain_tiny_base.py --out assets/tiny-llama

`--widen-from DIR --steps 0` widens a pretrained model's MLP to the current `intermediate_size` without
changing what it computes (new gate/up rows initialised as the model initialises weights, new down_proj
columns zero), in seconds. The shipped model was made so: 2000 steps at intermediate_size 352, then
widened to 384, because bitsandbytes' 4-bit CPU kernel needs every quantized dimension to be a multiple
of 64 (a from-scratch run at 384 needed ~80 minutes on the shared, busy machine of that day).

    python scripts/pretrain_tiny_base.py --widen-from assets/tiny-llama --steps 0 --out assets/tiny-llama
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from hydratune.synthetic import FUNCTIONS, OPERATIONS, pretraining_document, random_word
from hydratune.tiny import build_random_model


def make_batch(tokenizer, rng: random.Random, batch_size: int):
    """Documents of `op: word -> answer` lines; only the answers and line ends are trained.

    The words are random, so predicting them teaches nothing; masking them puts every gradient on
    the transformation itself.
    """
    rows, masks = [], []
    for _ in range(batch_size):
        ids, trained = [tokenizer.bos_token_id], [False]
        for line in pretraining_document(rng).split("\n"):
            question, answer = line.split(" -> ")
            for text, is_trained in ((question + " -> ", False), (answer + "\n", True)):
                piece = tokenizer(text, add_special_tokens=False)["input_ids"]
                ids += piece
                trained += [is_trained] * len(piece)
        rows.append(ids)
        masks.append(trained)
    width = max(len(r) for r in rows)
    input_ids = torch.full((batch_size, width), tokenizer.pad_token_id)
    attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
    labels = torch.full((batch_size, width), -100)
    for i, (ids, trained) in enumerate(zip(rows, masks)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        labels[i, : len(ids)] = torch.where(torch.tensor(trained), torch.tensor(ids), torch.tensor(-100))
    return input_ids, attention_mask, labels


def report_accuracy(model, tokenizer, rng: random.Random, per_op: int) -> None:
    """Greedy exact-match accuracy per operation, in the pretraining format, on fresh words."""
    model.eval()
    scores = []
    for op, (keyword, _) in OPERATIONS.items():
        correct = 0
        for _ in range(per_op):
            word = random_word(rng, 3, 8)
            if op == "lower":
                word = word.upper()
            prompt = f"{keyword}: {word} -> "
            ids = torch.tensor(
                [[tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False).input_ids]
            )
            with torch.no_grad():
                out = model.generate(input_ids=ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
            answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0]
            correct += answer == FUNCTIONS[op](word)
        scores.append(f"{op} {correct}/{per_op}")
    print("exact match: " + ", ".join(scores), flush=True)


def widen_mlp(source: str, seed: int):
    """The model saved in `source`, its MLP widened to `build_config`'s intermediate_size; same outputs."""
    from transformers import LlamaForCausalLM

    old = LlamaForCausalLM.from_pretrained(source, dtype=torch.float32)
    model, tokenizer = build_random_model(seed)  # new rows start as the model's own initialisation
    size = old.config.intermediate_size
    if model.config.intermediate_size < size:
        raise SystemExit(f"{source} has intermediate_size {size} > {model.config.intermediate_size}")
    state = model.state_dict()
    with torch.no_grad():
        for name, weight in old.state_dict().items():
            target = state[name]
            if name.endswith(("mlp.gate_proj.weight", "mlp.up_proj.weight")):
                target[:size] = weight  # rows past `size` keep their random init
            elif name.endswith("mlp.down_proj.weight"):
                target.zero_()  # the new units' outputs are not read: the function is unchanged
                target[:, :size] = weight
            else:
                target.copy_(weight)
    return model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="assets/tiny-llama")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--widen-from", metavar="DIR", help="start from this pretrained model, MLP widened")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    rng = random.Random(args.seed)
    if args.widen_from:
        model, tokenizer = widen_mlp(args.widen_from, args.seed)
    else:
        model, tokenizer = build_random_model(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = 100
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / max(args.steps, 1))
    )
    start = time.time()
    model.train()
    for step in range(args.steps):
        input_ids, attention_mask, labels = make_batch(tokenizer, rng, args.batch_size)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - start:6.1f}s", flush=True)
        if (step + 1) % 500 == 0 or step == args.steps - 1:
            report_accuracy(
                model, tokenizer, random.Random(args.seed + 1), per_op=10 if step < args.steps - 1 else 20
            )
            model.train()

    if args.steps == 0:
        report_accuracy(model, tokenizer, random.Random(args.seed + 1), per_op=20)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved to {args.out} in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
