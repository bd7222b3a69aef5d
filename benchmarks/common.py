"""Shared by the benchmark scripts: the CPU's name, and nanocode's real train step built on a one-device mesh."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from nanocode.agents import loading
from nanocode.cli.experiment import load as load_experiment
from nanocode.core import mesh as mesh_lib
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.train.state import init_train_state
from nanocode.train.step import make_train_step


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def one_device_train_step(config: GPTConfig, optimizer: Any, rows: int, **step_kw: Any) -> tuple[Any, Any, dict]:
    """(jitted train step, initial state, a random batch of `rows` rows) for `config` on a (1, 1, 1) mesh;
    `optimizer` is an OptimizerFactory, `step_kw` goes to make_train_step (loss_fn, remat)."""
    factory = mesh_lib.AxesMesh(shape=(1, 1, 1))
    mesh, rules = factory.make(jax.devices()[:1]), factory.rules
    with mesh_lib.activate(mesh, rules):
        params = nnx.state(nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0))), nnx.Param)
        tx = optimizer.build(params, 1000)
        init = init_train_state(GPT, config, tx, seed=0, mesh=mesh, rules=rules)
        step = make_train_step(
            init.graphdef,
            tx,
            state_shardings=init.shardings,
            batch_sharding=mesh_lib.batch_sharding(mesh, rules),
            **step_kw,
        )
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (rows, config.sequence_len + 1), np.int32)
    batch = {"tokens": jax.device_put(tokens, mesh_lib.batch_sharding(mesh, rules))}
    return step, init.state, batch


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """The flags that pick a trained checkpoint: the experiment (gin file and bindings), its stage and step."""
    parser.add_argument("--gin_file", default="experiments/debug_cpu.gin")
    parser.add_argument("--gin_param", action="append", default=[], help="a gin binding (repeatable)")
    parser.add_argument("--stage", default="sft")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")


def load_checkpoint(args: argparse.Namespace) -> tuple[Any, Any, Engine, ConversationCodec]:
    """The experiment, the loaded checkpoint (`nanocode.agents.loading`), its decode engine and conversation codec."""
    experiment = load_experiment([args.gin_file], args.gin_param)
    loaded = loading.load(experiment.inference_model(), experiment.workspace, stage=args.stage, step=args.step)
    return experiment, loaded, Engine(loaded.model), ConversationCodec(loaded.tokenizer)
