"""The LightningModule every task shares: model building, optimizer and scheduler wiring, schedule-free
switching, the NaN policy, trainable-only checkpoints and validation sums reduced over every rank.

A task's module subclasses `TaskModule` and writes `forward`, `training_step` and `validation_step`;
concrete tasks never inherit from one another.
"""

from __future__ import annotations

import contextlib
import copy
import logging

import lightning as L
import torch

from hydratune.errors import NonFiniteLoss
from hydratune.losses import linear_sequence_logps, sequence_logps
from hydratune.model import apply_peft, count_parameters, enable_gradient_checkpointing, load_model
from hydratune.optim import build_optimizer, build_scheduler, is_fused_backward, is_schedule_free
from hydratune.sharding import clip_fsdp_gradients, is_fsdp

log = logging.getLogger(__name__)

# Model families whose causal-LM logits are `lm_head(final hidden state)` and nothing more (no soft-capping,
# scaling or bias), so the loss may be computed from the hidden states in chunks (see `output_layer`).
PLAIN_OUTPUT_MODELS = frozenset(
    "llama mistral mixtral qwen2 qwen2_moe qwen3 qwen3_moe phi3 gemma olmo olmo2 smollm3 starcoder2".split()
)
# Strategies under which the output layer's weight is whole on every rank.
PLAIN_STRATEGIES = frozenset({"SingleDeviceStrategy", "DDPStrategy"})


class TaskModule(L.LightningModule):
    """What every task's module shares. The Hugging Face model is built in `configure_model`.

    Args:
        model: `from_pretrained` settings (the model config group, token removed).
        peft: the peft config group.
        optimizer: the optimizer config group (a `_target_` node).
        scheduler: the scheduler config group.
        gradient_checkpointing: recompute activations in backward to save memory.
        quantization: the quantization config group (base weights in 4 or 8 bits).
        hub_token: HF token for gated models; kept out of the saved hyperparameters.
        nan_policy: a non-finite training loss: "stop" (raise NonFiniteLoss) or "skip" (no update).
    """

    def __init__(
        self,
        model: dict,
        peft: dict,
        optimizer: dict,
        scheduler: dict,
        gradient_checkpointing: bool = False,
        quantization: dict | None = None,
        hub_token: str | None = None,
        nan_policy: str = "stop",
    ):
        super().__init__()
        # Collects the subclass's own arguments too (Lightning reads every __init__ frame).
        self.save_hyperparameters(ignore=["hub_token"])
        # train.fit logs the whole config, redacted, to every logger. Lightning would log these settings again,
        # unredacted (a reward's api_key from ${oc.env:...} reached hparams.yaml: review Z1).
        self._log_hyperparams = False
        self._hub_token = hub_token
        self.model = None
        # Checkpoints hold only trainable weights, so loading one is not strict.
        self.strict_loading = False
        # LOMO/AdaLomo update inside backward, so Lightning must not call backward itself.
        self.automatic_optimization = not is_fused_backward(optimizer)
        self._schedule_free = is_schedule_free(optimizer)
        self.skipped_batches = 0  # non-finite losses skipped under nan_policy=skip
        self._val_sums: dict[str, float] = {}
        self._reference: list = []  # [a frozen copy of the starting model] (see keep_reference)
        self._adapter_layers: list | None = None  # peft's adapter layers, listed once (see adapters_off)
        self._mergeable: list | None = None  # LoRA layers that merged_adapters can fold (listed once)
        # The step whose weights the task's last full evaluation measured; None for weights not evaluated
        # (load_trainable_weights clears it). A task that reports its final metrics from it sets it.
        self.evaluated_step: int | None = None

    # ------------------------------------------------------------------------------------ model

    def build_model(self):
        """The Hugging Face model before PEFT (a causal LM unless the task says otherwise)."""
        return load_model(self.hparams.model, self._hub_token, self.hparams.quantization)

    def peft_config(self) -> dict:
        """The peft config group as this task applies it."""
        return self.hparams.peft

    def configure_model(self) -> None:
        if self.model is not None:
            return
        model = self.build_model()
        if self.hparams.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = apply_peft(model, self.peft_config())
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps modes as it finds them
        trainable, total = count_parameters(self.model)
        log.info(
            "parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total
        )

    # ---------------------------------------------------------------------------- output layer

    def output_layer(self) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
        """`(decoder, output layer)` when the model's logits are exactly `output_layer(decoder(...))`, so a
        loss can start from the hidden states (`hydratune.losses.linear_cross_entropy`); None otherwise.

        None for: model families whose logits get more than the output layer (soft-capping, scaling: only
        the families in `PLAIN_OUTPUT_MODELS` qualify), an output layer that is adapted (LoRA on lm_head,
        modules_to_save) or has a bias, and sharded strategies (FSDP, DeepSpeed), where the layer's weight
        is not whole outside the wrapped forward.
        """
        if self._trainer is not None and type(self.trainer.strategy).__name__ not in PLAIN_STRATEGIES:
            return None
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if getattr(base.config, "model_type", None) not in PLAIN_OUTPUT_MODELS:
            return None
        head = base.get_output_embeddings()
        decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
        if decoder is None or type(head) is not torch.nn.Linear or head.bias is not None:
            return None
        return decoder, head

    def fused_scoring_head(self) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
        """`output_layer()` when answers can be scored from hidden states for the policy and its reference
        alike: `fused_loss` on, adapters (the reference is the same model with them off) and an output layer
        they leave frozen. None otherwise (score through the logits)."""
        if not (self.hparams.get("fused_loss") and self.uses_adapters):
            return None
        plain = self.output_layer()
        return plain if plain is not None and not plain[1].weight.requires_grad else None

    def answer_logps(self, batch: dict, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """`(log-probs, token counts)` per row of the batch's answer tokens (labels != -100) under the model
        as it is now (inside `adapters_off()`: the reference), summed or averaged over the tokens."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
        fused = self.fused_scoring_head()
        if fused is None:
            logits = self.model(**inputs, use_cache=False).logits
            return sequence_logps(logits, batch["labels"], average=average)
        decoder, head = fused
        hidden = decoder(**inputs, use_cache=False).last_hidden_state
        return linear_sequence_logps(hidden, head.weight, batch["labels"], average=average)

    # -------------------------------------------------------------------------- reference model

    @property
    def uses_adapters(self) -> bool:
        """Whether the trained weights are adapters that can be switched off (peft LoRA family)."""
        return hasattr(self.model, "disable_adapter")

    def keep_reference(self) -> None:
        """For tasks that compare with the starting model (DPO, KTO, GRPO's KL term): with adapters the
        reference is the same weights with the adapters off (no copy); otherwise a frozen copy of the
        starting weights, made here, before any checkpoint is restored, and kept out of the module's
        parameters (so out of checkpoints and the optimizer)."""
        if self.uses_adapters or self._reference:
            return
        self._reference = [copy.deepcopy(self.model).eval().requires_grad_(False)]
        log.info("reference model: a frozen copy of the starting weights")

    @contextlib.contextmanager
    def adapters_off(self):
        """The base weights alone: every adapter layer switched off, then on again. What peft's
        `disable_adapter()` does for the LoRA family, without walking every module of the model three times
        on each call (a reference forward per step paid ~45% on top for it, on a small model). Prompt
        learning and adapters with trained biases take peft's own path."""
        config = self.model.active_peft_config
        plain = (
            not (config.is_prompt_learning or config.is_adaption_prompt)
            and getattr(config, "bias", "none") == "none"
        )
        if not plain:
            with self.model.disable_adapter():
                yield
            return
        layers = self._adapter_layer_list()
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    def _adapter_layer_list(self) -> list:
        """peft's adapter layers (and modules_to_save wrappers), listed once: the model's layers do not change
        after `configure_model`."""
        if self._adapter_layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer
            from peft.utils.other import AuxiliaryTrainingWrapper

            adapter_types = (BaseTunerLayer, AuxiliaryTrainingWrapper)
            self._adapter_layers = [m for m in self.model.modules() if isinstance(m, adapter_types)]
        return self._adapter_layers

    @contextlib.contextmanager
    def merged_adapters(self):
        """For decoding (GRPO's sampling): each LoRA layer's update added into a temporary copy of its base
        weight and the adapters switched off, so a decoding step runs one matmul per layer instead of three.
        The base weights are swapped back afterwards untouched (no in-place merge and unmerge, whose
        rounding would move the frozen weights a little on every call). Anything but plain LoRA on
        unquantized Linear layers (DoRA, trained biases, modules_to_save, 4/8-bit bases, other adapter
        types) decodes through the adapters as they are. No gradients inside."""
        layers = self._mergeable_lora_layers() if self.uses_adapters else None
        if not layers:
            yield
            return
        swapped = []
        try:
            with torch.no_grad():
                for layer in layers:
                    base = layer.get_base_layer()
                    weight = base.weight
                    delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
                    base.weight = torch.nn.Parameter((weight + delta).to(weight.dtype), requires_grad=False)
                    swapped.append((base, weight))
            with self.adapters_off():
                yield
        finally:
            for base, weight in swapped:
                base.weight = weight

    def _mergeable_lora_layers(self) -> list:
        """The LoRA layers `merged_adapters` can fold into a weight copy, or [] if any adapter layer is of a kind
        it cannot (decided once)."""
        if self._mergeable is None:
            from peft.tuners.lora import Linear as LoraLinear

            adapter_layers = self._adapter_layer_list()
            config = self.model.active_peft_config
            plain = (
                getattr(config, "peft_type", None) == "LORA"
                and not getattr(config, "use_dora", False)
                and getattr(config, "bias", "none") == "none"
                and all(
                    type(m) is LoraLinear and type(m.get_base_layer()) is torch.nn.Linear and not m.merged
                    for m in adapter_layers
                )
            )
            self._mergeable = adapter_layers if plain else []
        return self._mergeable

    @torch.no_grad()
    def reference_logits(self, **inputs) -> torch.Tensor:
        """The reference model's logits for `inputs` (input_ids, attention_mask, ...)."""
        if self.uses_adapters:
            with self.adapters_off():
                return self.model(**inputs, use_cache=False).logits
        if not self._reference:
            raise RuntimeError("no reference model: call keep_reference() in configure_model")
        reference = self._reference[0]
        if next(reference.parameters()).device != self.device:
            reference.to(self.device)
        return reference(**inputs, use_cache=False).logits

    # ------------------------------------------------------------------------------------- loss

    def step_mean(self, total: torch.Tensor, count) -> torch.Tensor:
        """`total` summed over this optimizer step's micro-batches so far, over their summed `count` (tokens,
        pairs, rows). Logged at each micro-batch, the value the loggers keep for a step is the whole step's: it
        was the last micro-batch's alone, one in `accumulate_grad_batches` (review L11)."""
        step = self.global_step
        sums = getattr(self, "_step_sums", None)
        if sums is None or sums[0] != step:  # the window's first micro-batch (they all see the same step)
            sums = self._step_sums = [step, 0.0, 0.0]
        sums[1] = sums[1] + total.detach().float()
        sums[2] = sums[2] + count
        return sums[1] / torch.as_tensor(sums[2], dtype=torch.float32).clamp(min=1)

    def finite(self, loss: torch.Tensor) -> bool:
        """Whether `loss` is finite. If not: nan_policy=skip logs it and the caller returns None, so Lightning
        skips backward and leaves the weights alone; nan_policy=stop raises NonFiniteLoss."""
        if torch.isfinite(loss).all():
            return True
        message = f"train/loss is {loss.item()} at step {self.global_step}"
        if self.hparams.nan_policy != "skip":
            raise NonFiniteLoss(
                f"{message}: stopped (nan_policy=stop); lower optimizer.lr or set nan_policy=skip"
            )
        self.skipped_batches += 1
        log.warning("%s: batch skipped (nan_policy=skip; %d so far)", message, self.skipped_batches)
        return False

    def optimize(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to return from training_step; fused-backward optimizers (LOMO) step here instead."""
        if not self.automatic_optimization:
            optimizer, scheduler = self.optimizers(), self.lr_schedulers()
            lr = scheduler.get_last_lr()[0]

            def backward_and_update():
                if getattr(optimizer.optimizer, "clip_grad_norm", None):
                    optimizer.optimizer.grad_norm(loss)  # LOMO needs the global norm before its fused pass
                optimizer.optimizer.fused_backward(loss, lr)

            optimizer.step(closure=backward_and_update)
            scheduler.step()
        return loss

    # ------------------------------------------------------------------------------- validation

    def add_to_validation(self, **values: float) -> None:
        """Add to the validation sums (e.g. nll=..., tokens=...) that `validation_totals` reduces."""
        for key, value in values.items():
            self._val_sums[key] = self._val_sums.get(key, 0.0) + float(value)

    def validation_totals(self) -> dict[str, float]:
        """The validation sums over every rank: a ratio of totals, not a mean of per-rank ratios, so ranks
        with more tokens (or rows) weigh more, as they would in one process."""
        keys = sorted(self._val_sums)
        values = torch.tensor([self._val_sums[k] for k in keys], dtype=torch.float64, device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            values = self.trainer.strategy.reduce(values, reduce_op="sum")
        return dict(zip(keys, values.tolist()))

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    # ---------------------------------------------------------------- schedule-free optimizers

    def _schedule_free_mode(self, train: bool) -> None:
        # Schedule-free optimizers hold two weight sequences; eval mode puts the averaged one in place.
        if self._schedule_free and self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                optimizer.train() if train else optimizer.eval()

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        self._schedule_free_mode(True)

    def on_validation_start(self) -> None:
        self._schedule_free_mode(False)

    def on_train_end(self) -> None:
        self._schedule_free_mode(False)

    # ------------------------------------------------------------------- optimizer, checkpoints

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if is_fsdp(self.trainer) and gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            clip_fsdp_gradients(self.trainer, self.parameters(), gradient_clip_val)
            return
        inner = getattr(optimizer, "optimizer", optimizer)
        unscaled = getattr(self.trainer.precision_plugin, "scaler", None) is None
        if gradient_clip_val and unscaled and getattr(inner, "_step_supports_amp_scaling", False):
            # A fused optimizer (adamw_torch_fused) under bf16-mixed: no loss scaler, so its gradients are the
            # true ones and clip as any; Lightning refuses every fused optimizer under mixed precision.
            import torch

            params = [p for group in inner.param_groups for p in group["params"] if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def planned_steps(self) -> int:
        """The optimizer steps the run takes, for the LR schedule. With epochs set, Lightning's
        `estimated_stepping_batches` builds the fit loop's training loader here, before a resumed run's
        loader state is restored, and that state is then never applied: a resumed epoch would start over.
        So the epochs are counted as hydratune.callbacks.Epochs counts them (steps_per_epoch)."""
        trainer = self.trainer
        epochs, datamodule = trainer.max_epochs, trainer.datamodule
        if epochs is None or epochs < 0 or datamodule is None:
            return int(trainer.estimated_stepping_batches)  # max_steps: no data read
        from hydratune.callbacks import steps_per_epoch

        total = steps_per_epoch(trainer) * max(epochs, 1)
        return min(total, trainer.max_steps) if trainer.max_steps > 0 else total

    def configure_optimizers(self):
        optimizer = build_optimizer(self.hparams.optimizer, self.model)
        scheduler = build_scheduler(self.hparams.scheduler, optimizer, self.planned_steps())
        if self.hparams.scheduler["name"] == "reduce_lr_on_plateau":
            # Stepped on val/loss after each evaluation; strict=False: no value before the first one.
            config = {"scheduler": scheduler, "monitor": "val/loss", "strict": False}
            interval = self.trainer.val_check_interval
            if isinstance(interval, int):
                config |= {"interval": "step", "frequency": interval}
            return {"optimizer": optimizer, "lr_scheduler": config}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from hydratune.config import redact

        # The settings a checkpoint records, with their secrets out (they were written as resolved: Z1).
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = redact(dict(checkpoint["hyper_parameters"]))
        # Keep what was trained; the frozen base weights are reloaded from the hub id or path. Not under FSDP:
        # its sharded checkpoints are loaded key for key into the whole wrapped model (each rank writes 1/N).
        if is_fsdp(self.trainer):
            return
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
