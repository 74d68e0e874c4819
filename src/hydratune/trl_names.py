"""TRL's names for settings hydratune has under other names, and those it has no counterpart for: read by the TRL
importer (hydratune.importer_trl) and by the unknown-key error (`task.loss_type=...` on a command line). Data only:
it imports nothing, so the schema can read it without importing the importers."""

from __future__ import annotations

# Preference and GRPO keys of TRL's configs -> hydratune task keys (set where the chosen task has the key).
TASK_KEYS = {
    "beta": "beta",
    "label_smoothing": "label_smoothing",
    "rpo_alpha": "sft_weight",  # RPO: the NLL term on the chosen answer
    "precompute_ref_log_probs": "precompute_ref_logps",
    "desirable_weight": "desirable_weight",
    "undesirable_weight": "undesirable_weight",
    "num_generations": "num_generations",
    "max_completion_length": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "epsilon": "epsilon",
    "epsilon_high": "epsilon_high",
    "num_iterations": "num_iterations",
    "scale_rewards": "scale_rewards",
    "reward_funcs": "rewards",
    "center_rewards_coefficient": "center_rewards_coefficient",
}

# TRL config keys with no hydratune counterpart, and why (the importer lists them as not mapped).
TRL_UNSUPPORTED: dict[str, str] = {
    "env": "environment variables: export them before `python train.py`",
    "accelerate_config": "a launcher file or preset without a counterpart: trainer=deepspeed_zero2|"
    "deepspeed_zero3|fsdp|ddp are the presets",
    "fsdp_config": "trainer=fsdp wraps each decoder layer; set trainer.strategy.* (sharding_strategy, cpu_offload)",
    "lora_target_parameters": "LoRA on parameters (MoE experts) is not supported; target modules instead",
    "model_init_kwargs": "set model.* keys (dtype, attn_implementation, revision, trust_remote_code)",
    "chat_template_path": "built-in templates (dataset.chat_template=chatml|tiny) or the tokenizer's own",
    "dataset_kwargs": "hydratune tokenizes every format itself (BOS/EOS per sample, as TRL's defaults)",
    "eos_token": "the tokenizer's EOS ends every answer; add tokens to the tokenizer before training",
    "pad_token": "the tokenizer's pad token (or EOS) pads; add tokens to the tokenizer before training",
    "pad_to_multiple_of": "batches are padded to their longest row",
    "padding_free": "batches are padded rows; dataset.packing=true is the padding-free layout (samples never "
    "attend to each other)",
    "eval_packing": "validation batches are never packed",
    "shuffle_dataset": "training batches are always shuffled by the sampler (seed)",
    "use_liger_kernel": "Liger kernels are not used; hydratune's chunked loss (task.fused_loss) does that job",
    "router_aux_loss_coef": "mixture-of-experts router losses are not added",
    "max_prompt_length": "prompts are kept whole, as TRL 1.x keeps them; pairs whose prompt leaves no room for an "
    "answer in dataset.max_seq_length are dropped (counted in the data report; hydratune inspect counts them first). "
    "TRL before 1.0 (the alignment-handbook's recipes) kept a long prompt's last max_prompt_length tokens instead",
    "max_completion_length": "answers are cut to dataset.max_seq_length with their prompt",
    "reference_free": "the sigmoid loss always has its reference (task.loss=simpo|orpo are reference-free)",
    "f_divergence_type": "the DPO losses use the reverse KL only",
    "use_weighting": "WPO weighting is not supported",
    "ld_alpha": "LD-DPO length weighting is not supported",
    "discopop_tau": "task.loss is sigmoid, ipo, hinge, orpo or simpo",
    "sync_ref_model": "the reference is fixed (the base with adapters off, or a frozen copy)",
    "ref_model_mixup_alpha": "the reference is fixed (the base with adapters off, or a frozen copy)",
    "ref_model_sync_steps": "the reference is fixed (the base with adapters off, or a frozen copy)",
    "generate_during_eval": "validation answers go to <run>/generations.jsonl (eval_generations.num_prompts)",
    "reward_model_name_or_path": "read by GRPO only (task.reward_model)",
    "mask_truncated_completions": "truncated completions are scored like the others",
    "top_k": "sampling uses temperature and top_p",
    "min_p": "sampling uses temperature and top_p",
    "repetition_penalty": "sampling uses temperature and top_p",
    "generation_kwargs": "sampling uses task.temperature, task.top_p, task.max_new_tokens, task.stop",
    "generation_batch_size": "each step samples task.num_generations completions for each prompt of the batch",
    "steps_per_generation": "each optimizer step samples its own groups (TRL spreads one generation batch over "
    "several steps, without reuse; task.num_iterations reuses samples)",
    "importance_sampling_level": "importance ratios are per token",
    "log_completions": "task.log_completions sets how many validation prompts' groups are written",
    "average_tokens_across_devices": "the loss is averaged over the trained tokens of each device's batch",
    "log_level": "not a training setting",
    "logging_strategy": "losses are logged every trainer.log_every_n_steps steps (`steps`, not reported)",
    "ignore_bias_buffers": "a DDP workaround for some models; not needed with Lightning's DDP",
    "torch_empty_cache_steps": "the CUDA cache is left to PyTorch",
    "full_determinism": "trainer.deterministic=true",
    "dataset_test_split": "not used: TRL evaluates only with eval_strategy: steps|epoch",
}
