"""The one way the tests start N local processes under `accelerate launch` on a CPU host."""

from __future__ import annotations

import sys


def accelerate_launch(num_processes: int = 2, *, port: int = 0) -> list[str]:
    """argv prefix for `accelerate launch` with N local processes; append the script and its args.

    `--multi_gpu` selects accelerate's torchrun launcher, which without CUDA runs N gloo processes
    on the CPU; `--cpu --num_processes N` would start a single process unless an MPI hostfile is
    given (accelerate 1.15).
    """
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]
