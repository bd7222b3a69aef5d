"""Can a checkpoint copy from its context? The induction test: a row of random (but familiar) tokens, then the same
row again. A model with induction heads predicts the second copy far better than the first; one without has the same
loss on both. Copying is what an agent needs to put a request's file name into its tool call.

    NANOCODE_BASE_DIR=<workspace> .venv/bin/python benchmarks/induction.py --stage pretrain --step 300

Prints the mean loss (nats) on each half and their difference; results are kept in benchmarks/sft_conditioning_results.md.
"""

from __future__ import annotations

import argparse
import json

import jax.numpy as jnp
import numpy as np
import optax

from nanocode.agents import loading
from nanocode.cli.experiment import load as load_experiment


def induction_losses(model, ids: np.ndarray, rows: int = 8, length: int = 48, seed: int = 0) -> tuple[float, float]:
    """Mean next-token loss on the first and the second copy of `rows` random sequences of `length` tokens drawn
    from `ids` (the first token of each copy is not scored: nothing predicts it)."""
    x = np.random.default_rng(seed).choice(ids, size=(rows, length))
    seq = jnp.asarray(np.concatenate([x, x], axis=1))
    loss = optax.softmax_cross_entropy_with_integer_labels(model(seq[:, :-1]), seq[:, 1:])
    return float(loss[:, : length - 1].mean()), float(loss[:, length:].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default="experiments/debug_cpu.gin")
    parser.add_argument("--gin_param", action="append", default=[], help="a gin binding (repeatable)")
    parser.add_argument("--stage", default="pretrain")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    args = parser.parse_args()
    experiment = load_experiment([args.gin_file], args.gin_param)
    loaded = loading.load(experiment.inference_model(), experiment.workspace, stage=args.stage, step=args.step)
    text = open(json.decoder.__file__, encoding="utf-8").read()  # any real text: its tokens are familiar ones
    first, second = induction_losses(loaded.model, np.asarray(loaded.tokenizer.encode(text)))
    print(
        f"{args.stage} step {loaded.step}: first copy {first:.2f} nats, second copy {second:.2f} ({first - second:+.2f})"
    )


if __name__ == "__main__":
    main()
