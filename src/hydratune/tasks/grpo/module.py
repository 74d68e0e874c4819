"""The GRPO LightningModule: sample G completions of each prompt (KV cache on, seeded by the step), score
them with the reward functions, normalise the rewards within each prompt's group, and update the policy
with the clipped objective plus an optional KL term to the reference (the adapters switched off, with LoRA).

One batch of samples serves `num_iterations` optimizer steps (the batches of prompts that the loader hands
the reuse steps are not sampled). The samples in use are saved in checkpoints, so a resumed run continues
with exactly the completions it had.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from hydratune.errors import UserError
from hydratune.rewards import build_rewards, score
from hydratune.tasks.base import TaskModule
from hydratune.tasks.grpo.loss import group_advantages, grpo_loss, token_logps, zero_spread_fraction
from hydratune.tasks.grpo.sampling import sample, takes_logits_to_keep

log = logging.getLogger(__name__)
# The share of sampled groups with equal rewards, averaged over the steps between two evaluations, above which
# the run is told that it learns nothing.
NO_SIGNAL_SHARE = 0.95


class GRPOModule(TaskModule):
    """Group-relative policy optimisation of a causal LM.

    Args:
        rewards: `task.rewards`, each `{_target_: function, weight, **kwargs}` (hydratune.rewards).
        reward_model: a task=reward run directory, or a saved sequence classifier with one label (a folder
            or a hub id), whose model scores completions too (weight 1).
        num_generations: completions per prompt (G).
        max_new_tokens, temperature, top_p: sampling settings.
        stop: strings that end a completion besides EOS (each must be one token, e.g. a newline).
        conversational: the prompts are message lists (dataset.prompt_format=chat): TRL-shaped reward functions
            get them, and the completions, in TRL's conversational shapes.
        epsilon, epsilon_high: the clip range of the importance ratio (epsilon_high null: epsilon).
        beta: weight of the KL term to the reference model (0: no reference forward).
        num_iterations: optimizer steps per batch of samples.
        aggregation: grpo (a mean per sequence) | dr_grpo (a constant normaliser, no length bias) | bnpo (a
            token mean per micro-batch) | dapo (TRL's default: bnpo, allowed only where it is TRL's dapo, one
            micro-batch per optimizer step on one device). Formulas in hydratune.tasks.grpo.loss.
        scale_rewards: what divides each group's centred rewards: true/group its std, batch the std of all the
            rewards sampled in the micro-batch, false/none nothing (Dr. GRPO).
        seed: the base of the per-step sampling seed.
        log_completions: validation prompts whose sampled completions, rewards and advantages are
            written to completions.jsonl at every evaluation.
        Others: as `TaskModule`.
    """

    plot_metrics = ("val/reward",)
    val_loss_is_nll = False

    def __init__(
        self,
        model: dict,
        peft: dict,
        optimizer: dict,
        scheduler: dict,
        rewards: list | None = None,
        reward_model: str | None = None,
        num_generations: int = 8,
        max_new_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        beta: float = 0.0,
        num_iterations: int = 1,
        aggregation: str = "grpo",
        scale_rewards: bool | str = True,
        seed: int = 0,
        log_completions: int = 4,
        gradient_checkpointing: bool = False,
        quantization: dict | None = None,
        hub_token: str | None = None,
        nan_policy: str = "stop",
        conversational: bool = False,
    ):
        super().__init__(
            model, peft, optimizer, scheduler, gradient_checkpointing, quantization, hub_token, nan_policy
        )
        self.rewards = build_rewards(rewards or [], reward_model=reward_model, conversational=conversational)
        # The batches of samples in use (see num_iterations), by position in the accumulation window.
        self._samples: dict[int, dict] = {}
        self.step_tokens: dict[str, int] = {}  # read by the Throughput callback
        self._val_rows: list[dict] = []
        self._spread = [
            0.0,
            0,
        ]  # zero-spread shares of the sampled batches since the last report, and their count
        self._logits_to_keep: bool | None = None  # see _keeps_logits

    def on_fit_start(self) -> None:
        if self.hparams.aggregation == "dapo" and (
            self.trainer.accumulate_grad_batches > 1 or self.trainer.world_size > 1
        ):
            # Rule grpo_dapo_window says it before anything loads; this is for a module built without preflight.
            raise UserError(
                "task.aggregation=dapo needs the whole batch in one micro-batch: use task.aggregation=bnpo, or "
                "trainer.accumulate_grad_batches=1 on one device (trainer.devices=1)"
            )

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        if self.hparams.beta:
            self.keep_reference()

    @property
    def tokenizer(self):
        return self.trainer.datamodule.tokenizer

    def stop_token_ids(self, tokenizer=None) -> list[int]:
        """The ids of task.stop's strings (with `tokenizer`: outside a trainer, as `hydratune export` is)."""
        ids = []
        for text in self.hparams.stop or []:
            encoded = (tokenizer or self.tokenizer)(text, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                raise ValueError(
                    f"task.stop: {text!r} is {len(encoded)} tokens; each stop string must be one token"
                )
            ids += encoded
        return ids

    # ------------------------------------------------------------------------------------ sampling

    def _sample_and_score(self, batch: dict, seed: int, generations: int, temperature: float) -> dict:
        """Completions of the batch's prompts, their rewards and advantages, and the tensors to train on."""
        hp = self.hparams
        with self.merged_adapters():  # one matmul per LoRA layer while decoding
            samples = sample(
                self.model, self.tokenizer, batch["prompts"], generations, hp.max_new_tokens, temperature,
                hp.top_p, seed=seed, stop_token_ids=self.stop_token_ids(),
            )  # fmt: skip
        prompts = [p for p in batch["prompts"] for _ in range(generations)]
        turns = [t for t in batch.get("turns") or [None] * len(batch["prompts"]) for _ in range(generations)]
        columns = {
            k: [v for v in values for _ in range(generations)] for k, values in batch["columns"].items()
        }
        # Rewards read the completions without the stop string that ended them (completions.jsonl and the
        # loss keep it: it was sampled).
        total, per_function = score(self.rewards, prompts, samples.answers, columns, turns)
        rewards = torch.tensor(total, dtype=torch.float32)
        return {
            "samples": samples,
            "prompts": prompts,
            "rewards": rewards,
            "per_function": {k: torch.tensor(v, dtype=torch.float32) for k, v in per_function.items()},
            "advantages": group_advantages(rewards, generations, scale=hp.scale_rewards),
        }

    def _completion_logps(self, inputs: dict, completion_ids: torch.Tensor, reference: bool = False):
        width = inputs["input_ids"].size(1) - completion_ids.size(1)
        if self._keeps_logits():  # the output layer only at the positions that predict the completion
            inputs = {**inputs, "logits_to_keep": completion_ids.size(1) + 1}
            width = 1
        if reference:
            logits = self.reference_logits(**inputs)
        else:
            logits = self.model(**inputs, use_cache=False).logits
        return token_logps(logits[:, width - 1 : -1], completion_ids, self.hparams.temperature)

    def _keeps_logits(self) -> bool:
        """Whether the model takes `logits_to_keep`, so the prompt positions cost no output-layer work."""
        if self._logits_to_keep is None:
            self._logits_to_keep = takes_logits_to_keep(self.model)
        return self._logits_to_keep

    def _new_samples(self, batch: dict) -> dict:
        hp = self.hparams
        started = time.perf_counter()
        # Seeded by the step (and rank), so a resumed run samples what the first run would have.
        seed = hp.seed + 1_000_003 * self.global_step + self.global_rank
        out = self._sample_and_score(batch, seed, hp.num_generations, hp.temperature)
        samples = out["samples"]
        inputs = {k: v.to(self.device) for k, v in samples.model_inputs().items()}
        completion_ids = samples.completion_ids.to(self.device)
        with torch.no_grad():
            old = self._completion_logps(inputs, completion_ids) if hp.num_iterations > 1 else None
            ref = self._completion_logps(inputs, completion_ids, reference=True) if hp.beta else None
        rewards = out["rewards"]
        lengths = samples.completion_mask.sum(-1).float()
        return {
            "inputs": inputs,
            "completion_ids": completion_ids,
            "mask": samples.completion_mask.to(self.device),
            "advantages": out["advantages"].to(self.device),
            "old": old,
            "ref": ref,
            "stats": {
                "train/reward": float(rewards.mean()),
                "train/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
                # TRL's reward_std: the mean of the groups' own stds (the spread advantages are made of: G10)
                "train/group_reward_std": float(rewards.view(-1, hp.num_generations).std(-1).mean())
                if hp.num_generations > 1
                else 0.0,
                **{f"train/reward/{k}": float(v.nanmean()) for k, v in out["per_function"].items()},
                "train/completion_length": float(lengths.mean()),
                "train/zero_spread_groups": zero_spread_fraction(rewards, hp.num_generations),
                "train/sampling_tokens_per_s": samples.num_tokens / max(time.perf_counter() - started, 1e-9),
            },
        }

    # ------------------------------------------------------------------------------------ training

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        # Each micro-batch of a window keeps its own samples for the reuse steps (they all reused the last one's).
        # A sampling step starts the set afresh: a short window (an epoch's last) leaves no older samples behind.
        slot = batch_idx % self.trainer.accumulate_grad_batches
        if slot == 0 and self.global_step % hp.num_iterations == 0:
            self._samples = {}
        if slot not in self._samples:
            self._samples[slot] = self._new_samples(batch)
            self._spread[0] += self._samples[slot]["stats"]["train/zero_spread_groups"]
            self._spread[1] += 1
        s = self._samples[slot]
        started = time.perf_counter()
        logps = self._completion_logps(s["inputs"], s["completion_ids"])
        loss, stats = grpo_loss(
            logps, s["old"], s["ref"], s["advantages"], s["mask"], hp.epsilon, hp.beta, hp.aggregation,
            hp.epsilon_high, hp.max_new_tokens,
        )  # fmt: skip
        if not self.finite(loss):
            return None
        real = int(s["inputs"]["attention_mask"].sum())
        self.step_tokens = {"real": real, "rows": s["mask"].size(0), "trained": int(s["mask"].sum()),
                            "padded": s["inputs"]["input_ids"].numel()}  # fmt: skip
        forward_seconds = max(time.perf_counter() - started, 1e-9)
        rows = s["mask"].size(0)
        self.log_dict(
            {"train/loss": loss.detach(), "train/kl": stats["kl"], "train/clip_fraction": stats["clip_fraction"],
             "train/clip_low": stats["clip_low"], "train/clip_high": stats["clip_high"],  # TRL's clip_ratio/*
             "train/training_tokens_per_s": real / forward_seconds, **s["stats"]},
            batch_size=rows,
        )  # fmt: skip
        return self.optimize(loss)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._samples and self.hparams.num_iterations > 1:
            checkpoint["grpo_samples"] = self._samples  # the reuse steps after a resume train on these

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("grpo_samples") or {}
        # One batch of samples (a checkpoint written before each micro-batch kept its own) is the first one's.
        self._samples = {0: saved} if "inputs" in saved else saved

    # ---------------------------------------------------------------------------------- validation

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Greedy answers of the held-out prompts, scored by the rewards; the first prompts' sampled
        groups (rewards and advantages) go to completions.jsonl."""
        out = self._sample_and_score(batch, seed=0, generations=1, temperature=0.0)
        sums = {"reward": float(out["rewards"].sum()), "rows": out["rewards"].numel()}
        sums |= {f"reward/{k}": float(v.nansum()) for k, v in out["per_function"].items()}
        self.add_to_validation(**sums)
        wanted = self.hparams.log_completions - len(self._val_rows)
        if wanted > 0 and self.global_rank == 0:
            head = {
                "prompts": batch["prompts"][:wanted],
                "turns": (batch.get("turns") or [None] * len(batch["prompts"]))[:wanted],
                "columns": {k: v[:wanted] for k, v in batch["columns"].items()},
            }
            group = self._sample_and_score(
                head, self.hparams.seed, self.hparams.num_generations, self.hparams.temperature
            )
            for i, prompt in enumerate(group["prompts"]):
                # each function's own value beside the weighted sum, as TRL's completions table has (review G10)
                each = {f"reward/{k}": _rounded(v[i]) for k, v in group["per_function"].items()}
                self._val_rows.append({"step": self.global_step, "prompt": prompt, "completion": group["samples"].texts[i],
                                       "reward": round(float(group["rewards"][i]), 6), **each,
                                       "advantage": round(float(group["advantages"][i]), 6)})  # fmt: skip

    def on_train_end(self) -> None:
        self.warn_if_no_signal()

    def warn_if_no_signal(self) -> None:
        """A warning when (nearly) every sampled group since the last one scored its completions alike: their
        advantages are zero, so those steps taught nothing."""
        total, batches = self._spread
        self._spread = [0.0, 0]
        if batches and total / batches >= NO_SIGNAL_SHARE:
            log.warning(
                "grpo: %.0f%% of the sampled groups of the last %d steps scored all their completions alike (zero "
                "advantage: nothing learnt); make the rewards tell answers apart (a graded reward), or sample more "
                "varied groups (task.temperature, task.num_generations)", 100 * total / batches, batches,
            )  # fmt: skip

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_rows = []

    def on_validation_epoch_end(self) -> None:
        totals = self.validation_totals()
        n = max(totals.pop("rows", 0.0), 1)
        reward = totals.pop("reward", 0.0) / n
        # val/loss is the negative mean reward, so "lower is better" holds for sweeps and checkpoints.
        self.log("val/loss", -reward)
        self.log("val/reward", reward, prog_bar=True)
        self.log_dict({f"val/{k}": v / n for k, v in totals.items()})
        log.info("step %d: val/reward %.4f (greedy, held-out prompts)", self.global_step, reward)
        if self._trainer is not None and not self.trainer.sanity_checking:
            self.warn_if_no_signal()
        if self._val_rows and self._trainer is not None and not self.trainer.sanity_checking:
            path = Path(self.trainer.default_root_dir) / "completions.jsonl"
            with open(path, "a") as f:
                f.writelines(json.dumps(row) + "\n" for row in self._val_rows)


def _rounded(value) -> float | None:
    """A reward for completions.jsonl: 6 decimals, or None where the function gave none (NaN is not JSON)."""
    value = float(value)
    return None if value != value else round(value, 6)
