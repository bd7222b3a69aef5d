"""Parameter counts, FLOPs per token, tokens per step and the step count of a pretraining experiment, from shapes
alone (instant; no devices, data or tokenizer needed).

--compile also compiles the train step ahead of time for the experiment's mesh on simulated CPU devices and prints
XLA's memory analysis per device: a check that a run fits before renting the accelerators. (CPU compilation
approximates the accelerator's buffers: same shapes and shardings, different fusion and layouts.)

Example: nanocode plan --gin_file experiments/d24_tpu_v6e8.gin --compile
"""

from __future__ import annotations

import argparse
import math
import os
import time

from nanocode.cli.common import add_config_arguments, load_experiment
from nanocode.core.errors import ConfigError
from nanocode.train.runtime import use_memory_ordered_cpu_scheduler


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="AOT-compile the train step on simulated devices; print memory per device",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="simulated devices for --compile (default: the mesh's size; 8 when its shape has a -1)",
    )


def simulate_cpu_devices(n: int) -> None:
    """Ask JAX for `n` CPU devices; only possible before the backend starts (this command touches none before).

    With XLA:CPU's memory-ordered scheduler (nanocode.train.runtime): the default one starts recomputations early,
    undoing remat and overstating memory next to a TPU or GPU.
    """
    import jax

    use_memory_ordered_cpu_scheduler()
    os.environ["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={n}"
    jax.config.update("jax_platforms", "cpu")
    if len(jax.devices()) < n:
        raise ConfigError(
            f"--compile needs {n} simulated devices but JAX already started with {len(jax.devices())}; "
            "run `nanocode plan --compile` in a fresh process"
        )


def memory_lines(analysis) -> list[str]:
    gib = 2**30
    total = (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes
        + analysis.temp_size_in_bytes
    )
    lines = [
        "memory per device (XLA memory analysis of the compiled step):",
        f"  arguments (train state + batch) {analysis.argument_size_in_bytes / gib:8.2f} GiB",
        f"  outputs                        {analysis.output_size_in_bytes / gib:8.2f} GiB",
        f"  aliased (donated state)        {analysis.alias_size_in_bytes / gib:8.2f} GiB",
        f"  temporaries (activations...)   {analysis.temp_size_in_bytes / gib:8.2f} GiB",
        f"  generated code                 {analysis.generated_code_size_in_bytes / gib:8.2f} GiB",
        f"  peak estimate                  {total / gib:8.2f} GiB (arguments + outputs - aliased + temporaries)",
    ]
    return lines


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args).stage("pretraining")
    print(experiment.plan().describe())
    if not args.compile:
        return 0
    shape = getattr(experiment.mesh, "shape", None)
    n = args.devices or (8 if shape is None or -1 in shape else math.prod(shape))
    simulate_cpu_devices(n)
    import jax

    mesh = experiment.mesh.make(jax.devices()[:n])
    start = time.monotonic()
    compiled = experiment.compile_step(mesh)
    print(
        f"compiled the train step for mesh {dict(mesh.shape)} on {n} simulated CPU devices "
        f"in {time.monotonic() - start:.1f}s"
    )
    for line in memory_lines(compiled.memory_analysis()):
        print(line)
    return 0
