"""Data-parallel training over the processes of a ``torchrun`` or ``accelerate launch`` (DDP).

Started with ``WORLD_SIZE`` > 1, every process trains the whole model on its share of
each optimizer step's micro-batches (micro-batch ``i`` of a step goes to process
``i % WORLD_SIZE``). The step's labeled-token count is summed over the processes before
the forward passes and the LoRA gradients after them, so each process takes exactly the
step one process would take on all the step's micro-batches: the same samples per step,
the same token-weighted mean loss, the same number of steps. The gradients are reduced
by hand, once per step, rather than by ``DistributedDataParallel``: a process whose share
of a step is empty (fewer micro-batches than processes) still joins with zero gradients.

Process 0 reads and writes checkpoints and the adapter directory, the others wait. On
CUDA each process uses the GPU of its ``LOCAL_RANK`` over NCCL; on CPU the processes talk
over gloo. Without ``WORLD_SIZE`` > 1 every method here is a no-op on one process.
"""

from __future__ import annotations

import atexit
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..config.pipeline import TrainingConfig
from ..model.batching import IGNORE_INDEX, Sample
from ..model.lm_loss import evaluate

T = TypeVar("T")
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes, and the collectives between them."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's items: every ``world_size``-th, starting at its rank."""
        return list(items[self.rank :: self.world_size])

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed element-wise over the processes (in float64)."""
        if self.world_size == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its sum over the processes, one reduction per dtype."""
        if self.world_size == 1:
            return
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = defaultdict(list)
        for parameter in parameters:
            by_dtype[parameter.dtype].append(parameter)
        for group in by_dtype.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
            dist.all_reduce(flat)
            for parameter, piece in zip(group, flat.split([p.numel() for p in group])):
                parameter.grad = piece.view_as(parameter)

    def copy_from_main(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Give every process process 0's values of ``parameters``."""
        if self.world_size == 1:
            return
        with torch.no_grad():
            for parameter in parameters:
                dist.broadcast(parameter.data, src=0)

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` run by process 0 only, its result sent to every process."""
        if self.world_size == 1:
            return compute()
        holder = [compute() if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every process, in rank order."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world_size == 1:
            return
        if self.device.startswith("cuda"):
            dist.barrier(device_ids=[torch.device(self.device).index])
        else:
            dist.barrier()

    def main_only(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` on process 0; the others stay quiet rather than repeat every line."""
        return log if self.is_main else (lambda _line: None)


def launch_processes(training: TrainingConfig) -> Processes:
    """The processes of this launch, joining (or starting) the process group when there are several.

    One process trains on ``cuda`` when there is a GPU, else on ``cpu``, as
    :func:`.base_model.device_and_dtype` chooses. Several each take the GPU of their
    ``LOCAL_RANK``, before anything else touches CUDA (which would open a context on
    GPU 0 in every process). A process group that the launching code already started is
    used as it is.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes(device=device)
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: start data-parallel training with "
            "torchrun or accelerate launch, or unset WORLD_SIZE to train in one process"
        )
    if training.quantization != "none":
        raise ValueError(
            f"training.quantization '{training.quantization}' trains on one GPU only, not data-parallel "
            f"(WORLD_SIZE={world_size}): start one process, or set training.quantization: none"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise ValueError(
                f"LOCAL_RANK={local_rank} but {visible} GPU(s) are visible: start at most {visible} processes per node"
            )
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        atexit.register(_leave_process_group)
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError(
            f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, "
            f"but RANK={rank} and WORLD_SIZE={world_size}"
        )
    return Processes(rank=rank, world_size=world_size, device=device)


def _leave_process_group() -> None:
    if dist.is_initialized():  # the launching code may have left it already
        dist.destroy_process_group()


def predicted_count(sample: Sample) -> int:
    """Labeled tokens of ``sample`` that are a prediction target (the first token never is)."""
    return sum(label != IGNORE_INDEX for label in sample.labels[1:])


def evaluate_shared(model, samples: Sequence[Sample], micro_batch_size: int, pad_id: int, processes: Processes):
    """Mean per-token loss on ``samples``, each process evaluating its share of the micro-batches."""
    if processes.world_size == 1:
        return evaluate(model, samples, micro_batch_size, pad_id, processes.device)
    batches = [samples[start : start + micro_batch_size] for start in range(0, len(samples), micro_batch_size)]
    mine = [sample for batch in processes.share(batches) for sample in batch]
    count = sum(predicted_count(sample) for sample in mine)
    mean = evaluate(model, mine, micro_batch_size, pad_id, processes.device) if mine else None
    total, count = processes.sum([0.0 if mean is None else mean * count, count])
    return total / count if count else None


def restore_rng(checkpoint: dict, processes: Processes, seed: int) -> None:
    """This process's CPU random state (dropout) as the checkpoint recorded it.

    Resumed with another number of processes, process 0 takes the recorded state of
    process 0 and the others start streams of their own.
    """
    states = checkpoint.get("process_rngs") or [checkpoint["rng"]]
    if len(states) == processes.world_size:
        torch.set_rng_state(states[processes.rank])
    else:
        torch.set_rng_state(states[0])
        if processes.rank:
            torch.manual_seed(seed + processes.rank)
