"""The commands that start adapter training where the step runs: one child, or a ``torchrun`` of them.

``python -m baize_assets.core.train.launch N`` is ``torchrun --standalone
--nproc_per_node=N -m baize_assets.core.train.pipes`` (one machine, N processes, a free
rendezvous port), run in a process that first ties itself to the step that started it: a
step killed with SIGKILL takes torchrun down, and torchrun's processes die with torchrun.
"""

from __future__ import annotations

import os
import sys

from ..config.training import TRAINING_MODULE
from ..parent_death import die_with_parent
from .pipes import PARENT_PID_ENV


def child_command() -> list[str]:
    """The command of one training child, in this Python."""
    return [sys.executable, "-m", TRAINING_MODULE]


def torchrun_command(processes: int) -> list[str]:
    """The command of a data-parallel launch of ``processes`` training processes on this machine."""
    return [sys.executable, "-m", __spec__.name, str(processes)]


def main(argv: list[str]) -> None:
    (processes,) = argv
    if os.environ.get(PARENT_PID_ENV):
        die_with_parent(int(os.environ[PARENT_PID_ENV]))
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc_per_node={int(processes)}", "-m", TRAINING_MODULE])


if __name__ == "__main__":
    main(sys.argv[1:])
