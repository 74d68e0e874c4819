"""Compare hydratune's DPO loss and gradients with TRL's DPOTrainer on one batch (not a test dependency).

What: the shipped tiny model with a LoRA adapter whose weights are random (so the policy differs from
the reference = adapters disabled, and the loss is not the trivial log 2), four pairs of
data/preference/train.jsonl, sigmoid DPO. hydratune's path: `tokenize_pairs` -> `PairCollator` -> one
forward of 2B rows -> `sequence_logps` -> `preference_loss`. TRL's: `DPOTrainer.compute_loss` on its
own tokenization and collator. Prints the token ids check, both losses, rewards, and per-parameter
gradient differences, and writes them to outputs/compare_trl_dpo.txt. Pass: relative differences
<= 1e-5. Hardware: CPU; about 20 seconds.

TRL comes with the `bench` extra (`make install` installs it, pinned in constraints.txt):

    .venv/bin/python scripts/compare_trl_dpo.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from hydratune.data.pairs import PairCollator, tokenize_pairs
from hydratune.losses import preference_loss, sequence_logps


def lora_config(random_init: bool):
    from peft import LoraConfig

    return LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=not random_init
    )


def base_model(model_dir: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def hydratune_dpo(model, pairs: list[dict], pad_token_id: int, beta: float):
    batch = PairCollator(pad_token_id)(pairs)
    n = len(pairs)
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    policy, _ = sequence_logps(logits, batch["labels"])
    with torch.no_grad(), model.disable_adapter():
        ref_logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
        ref, _ = sequence_logps(ref_logits, batch["labels"])
    out = preference_loss(policy[:n], policy[n:], ref[:n], ref[n:], "sigmoid", beta)
    loss = out["loss"].mean()
    loss.backward()
    return loss.item(), out["chosen_rewards"], out["rejected_rewards"]


def grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="assets/tiny-llama")
    parser.add_argument("--data", default="data/preference/train.jsonl")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--out", default="outputs/compare_trl_dpo.txt")
    args = parser.parse_args()

    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(1)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[: args.pairs]]
    tokenized = tokenize_pairs(rows, tokenizer, {"format": "pairs", "max_seq_length": 128})
    pairs = [
        {k: tokenized[k][i] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for i in range(len(rows))
    ]

    from peft import get_peft_model

    torch.manual_seed(0)
    ours = get_peft_model(base_model(args.model), lora_config(random_init=True))  # random A and B
    ours.eval()

    # TRL tokenizes the prompt with the tokenizer's special tokens and appends EOS to the answers. A tokenizer
    # that adds no BOS itself gets it written into the prompt text, as hydratune puts it; the ids are checked below.
    adds_bos = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    dataset = Dataset.from_list(
        [row if adds_bos else {**row, "prompt": tokenizer.bos_token + row["prompt"]} for row in rows]
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(
            output_dir=tmp,
            beta=args.beta,
            loss_type=["sigmoid"],
            per_device_train_batch_size=len(rows),
            max_length=None,
            report_to=[],
            use_cpu=True,
            gradient_checkpointing=False,
            bf16=False,
        )
        # TRL adds the adapter itself (so its reference is the base with adapters disabled, as hydratune's;
        # given a PeftModel it would use a frozen copy of that adapter instead); then it gets our weights.
        trainer = DPOTrainer(
            model=base_model(args.model), args=config, train_dataset=dataset, processing_class=tokenizer,
            peft_config=lora_config(random_init=False),
        )  # fmt: skip
        theirs = trainer.model
        state = dict(ours.named_parameters())
        with torch.no_grad():
            for name, param in theirs.named_parameters():
                if "lora_" in name:
                    param.copy_(state[name])
        theirs.eval()  # no dropout anywhere; both paths see identical weights
        trl_rows = [trainer.train_dataset[i] for i in range(len(rows))]
        same_ids = all(
            all(trl_row[k] == pair[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
            for trl_row, pair in zip(trl_rows, pairs)
        )
        say(
            f"trl {trl.__version__}; {len(rows)} pairs of {args.data}; beta {args.beta}; LoRA r=16 (random init)"
        )
        say(f"token ids identical (prompt, chosen, rejected): {same_ids}")
        batch = trainer.data_collator(trl_rows)
        trl_loss = trainer.compute_loss(trainer.model, batch)
        trl_loss.backward()
        metrics = trainer._metrics["eval" if not theirs.training else "train"]
        trl_metrics = {k: v[-1] for k, v in metrics.items() if k.startswith("rewards/")}

    our_loss, chosen_rewards, rejected_rewards = hydratune_dpo(ours, pairs, tokenizer.pad_token_id, args.beta)
    rel = abs(our_loss - trl_loss.item()) / abs(trl_loss.item())
    say(f"loss: hydratune {our_loss:.10f}  trl {trl_loss.item():.10f}  relative difference {rel:.2e}")
    say(
        f"rewards/chosen: hydratune {chosen_rewards.mean().item():.8f} trl {trl_metrics.get('rewards/chosen', float('nan')):.8f}; "
        f"rewards/rejected: hydratune {rejected_rewards.mean().item():.8f} "
        f"trl {trl_metrics.get('rewards/rejected', float('nan')):.8f}"
    )
    ours_g, theirs_g = grads(ours), grads(trainer.model)
    worst_name, worst = "", 0.0
    total_diff = total_norm = 0.0
    for name, g in ours_g.items():
        other = theirs_g[name]
        diff = (g - other).norm().item()
        total_diff += diff**2
        total_norm += other.norm().item() ** 2
        relative = diff / max(other.norm().item(), 1e-30)
        if relative > worst:
            worst_name, worst = name, relative
    say(
        f"gradients: {len(ours_g)} LoRA tensors, global relative difference {(total_diff / total_norm) ** 0.5:.2e}"
    )
    say(f"gradients: worst tensor {worst_name} relative difference {worst:.2e}")
    passed = rel <= 1e-5 and worst <= 1e-5 and same_ids
    say(f"{'PASS' if passed else 'FAIL'} (threshold 1e-5 relative)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    raise SystemExit(0 if passed else 1)


if __name__ == "__main__":
    main()
