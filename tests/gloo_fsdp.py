"""Lightning's FSDP strategy on CPU processes (gloo), so that the suite can run `trainer=fsdp` without a GPU.

Lightning refuses `FSDPStrategy` on a CPU accelerator and gives FSDP no device on one; a subclass passes the
first check and `device_id=cpu` the second. Everything else is Lightning's and PyTorch's own FSDP code: the
wrapping, the sharding over ranks, the state-dict hooks. Test-only: `trainer.strategy._target_=gloo_fsdp.GlooFSDP`
with `tests/` on PYTHONPATH.
"""

from __future__ import annotations

import torch
import torch.distributed.fsdp as fsdp
from lightning.pytorch.strategies import FSDPStrategy


class GlooFSDP(FSDPStrategy):
    def _setup_model(self, model):
        wrapper = fsdp.FullyShardedDataParallel
        init = wrapper.__init__

        def on_cpu(self, *args, device_id=None, **kwargs):
            init(self, *args, device_id=torch.device("cpu") if device_id is None else device_id, **kwargs)

        wrapper.__init__ = on_cpu  # the class itself, so that Lightning's and FSDP's isinstance checks hold
        try:
            return super()._setup_model(model)
        finally:
            wrapper.__init__ = init
