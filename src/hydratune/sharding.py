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
    return clip_sharded_grad_norm(parameters, max_norm, *shard_layout(trainer))


def shard_layout(trainer) -> tuple[bool, int]:
    """(sharded, replicas) of `grad_norm` for this trainer: whether each rank's gradients are a disjoint piece
    (FSDP on several ranks, except NO_SHARD), and how many ranks hold each piece (hybrid: one per node)."""
    if not is_fsdp(trainer):
        return False, 1
    kind = str(getattr(trainer.strategy, "sharding_strategy", ""))
    sharded = trainer.world_size > 1 and "NO_SHARD" not in kind
    return sharded, trainer.num_nodes if "HYBRID" in kind else 1


def grad_norm(grads: list[torch.Tensor], sharded: bool = False, replicas: int = 1) -> torch.Tensor:
    """Global L2 norm of `grads`, in float32: one multi-tensor kernel for the per-tensor norms (a LoRA model
    has hundreds of small gradients; a kernel launch each costs more than the arithmetic on a GPU).

    `sharded`: each rank holds a disjoint part of the gradients (FSDP with use_orig_params: a parameter's
    `.grad` is this rank's piece of it), so the squares are summed over every rank; `replicas` ranks hold
    the same piece (hybrid sharding), counted once. Every rank must call it then."""
    import torch.distributed as dist

    sharded = sharded and dist.is_available() and dist.is_initialized()
    if grads:
        norms = torch._foreach_norm([g.detach() for g in grads], 2.0, dtype=torch.float32)
        squares = torch.stack(norms).square().sum()
    else:  # a rank whose shard holds no gradient still joins the sum, or the others would wait for it
        on_gpu = sharded and dist.get_backend() == "nccl"
        squares = torch.zeros(
            (), device=torch.device("cuda", torch.cuda.current_device()) if on_gpu else "cpu"
        )
    if sharded:
        dist.all_reduce(squares)
        squares = squares / replicas
    return squares.sqrt()


def clip_sharded_grad_norm(parameters, max_norm: float, sharded: bool, replicas: int = 1) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm (`grad_norm`, with `sharded` and `replicas` as there)
    is at most `max_norm`; the norm before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = grad_norm(grads, sharded, replicas)
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
