"""What changes when the weights are sharded over processes (FSDP): detecting it, clipping by the norm of
every shard's gradients, and gathering the whole model for the export."""

from __future__ import annotations

import torch


def is_fsdp(trainer) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(trainer.strategy, FSDPStrategy)


def clip_fsdp_gradients(trainer, parameters, max_norm: float) -> torch.Tensor:
    """trainer.gradient_clip_val under FSDP (Lightning's FSDP precision refuses to clip by norm): the norm
    over every rank's shard of the gradients, whole model copies (hybrid sharding: one per node) counted once."""
    kind = str(getattr(trainer.strategy, "sharding_strategy", ""))
    sharded = trainer.world_size > 1 and "NO_SHARD" not in kind
    replicas = trainer.num_nodes if "HYBRID" in kind else 1
    return clip_sharded_grad_norm(parameters, max_norm, sharded, replicas)


def clip_sharded_grad_norm(parameters, max_norm: float, sharded: bool, replicas: int = 1) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm is at most `max_norm`; the norm before clipping.

    `sharded`: each rank holds a disjoint part of the gradients (FSDP with use_orig_params: a parameter's
    `.grad` is this rank's piece of it), so the squares are summed over every rank; `replicas` ranks hold
    the same piece (hybrid sharding), counted once."""
    import torch.distributed as dist

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    squares = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
    if sharded and dist.is_available() and dist.is_initialized():
        dist.all_reduce(squares)
        squares = squares / replicas
    norm = squares.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return norm


def full_state_dict(trainer) -> dict:
    """Under FSDP, the whole model's weights (the LightningModule's `model.` keys, prefix dropped), gathered from
    every rank's shard onto rank 0 (and its CPU); the other ranks get an empty dict. Every rank must call it."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    wrapped = trainer.strategy.model
    gather = FullStateDictConfig(offload_to_cpu=torch.cuda.is_available(), rank0_only=True)
    with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, gather):
        weights = wrapped.state_dict()
    return {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
