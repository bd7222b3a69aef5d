"""RL episodes per second on this CPU: the debug experiment's RL step (experiments/debug_cpu.gin) timed in parts.

For `--rounds` rounds of the debug RL batch (2 training tasks x 4 samples, at most 4 replies of 96 tokens, the d3
model at a 2,048-token context), after one compiling warm-up round, this measures:
- sampling: `rl_episodes.sample_episodes` (the KV engine in batch, the real tools in namespaced sandboxes, the hidden
  checks) -> episodes/s, with the replies, tool calls and tokens per episode that explain it;
- the train step (`train.rl_step`, GRPO, micro-batches of 4) on those episodes -> seconds per step;
- CPU seconds (this process and every command it ran) beside the wall time, so a shared machine's load shows.

The model is the debug d3 with random weights unless `--checkpoint` names a step directory (e.g. the debug run's
align checkpoint): a random model rarely calls a tool, so its episodes end after one reply and sample faster than a
trained model's, whose calls run commands and whose turns feed tool results.

    .venv/bin/python benchmarks/rl.py [--checkpoint ~/.cache/nanocode/debug/align/checkpoints/30]

Run it on a quiet machine (`uptime` load < 2.5): it refuses otherwise unless --force. Writes benchmarks/rl_results.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from common import cpu_name
from flax import nnx

import nanocode.registry as registry
from nanocode.agents.policy import system_prompt
from nanocode.agents.rl import episode_batch
from nanocode.agents.rl_episodes import episode_metrics, sample_episodes
from nanocode.agents.tasks import RepoTasks
from nanocode.agents.tools import build_tools
from nanocode.align.objectives.grpo import GRPO
from nanocode.core import mesh as mesh_lib
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from nanocode.models.gpt import GPT, GPTConfig
from nanocode.optim.adamw import AdamW
from nanocode.train.finetune import restore_params
from nanocode.train.rl_step import RLLoss, make_rl_step
from nanocode.train.state import init_train_state

RESULTS = Path(__file__).with_name("rl_results.md")
# experiments/base/model/d3.gin at the debug experiment's context
D3 = GPTConfig(sequence_len=2048, vocab_size=8192, n_layer=3, n_head=3, n_kv_head=3, n_embd=192, attention="blocked")
TASKS, SAMPLES, MAX_STEPS, MAX_NEW_TOKENS, MICRO = 2, 4, 4, 96, 4


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checkpoint", default=None, help="a step directory whose params to sample with")
    parser.add_argument("--tag", default="debug", help="whose tokenizer (the debug run's: $NANOCODE_BASE_DIR/<tag>)")
    parser.add_argument("--force", action="store_true", help="run even on a loaded machine")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    if load_before >= 2.5 and not args.force:
        raise SystemExit(f"load average {load_before:.2f} >= 2.5: the machine is busy (--force to run anyway)")
    registry.load_builtins()
    tokenizer = registry.kind("tokenizer").get("bpe").load(Workspace(args.tag).tokenizer_dir)
    codec, tools = ConversationCodec(tokenizer), build_tools()
    system = system_prompt(tools)

    factory = mesh_lib.AxesMesh(shape=(1, 1, 1))
    mesh, rules = factory.make(jax.devices()[:1]), factory.rules
    with mesh_lib.activate(mesh, rules):
        params = nnx.state(nnx.eval_shape(lambda: GPT(D3, rngs=nnx.Rngs(0))), nnx.Param)
        tx = AdamW(lr=1e-4).build(params, 1000)
        init = init_train_state(GPT, D3, tx, seed=0, mesh=mesh, rules=rules)
        state = init.state
        if args.checkpoint:
            state.params = restore_params(Path(args.checkpoint).expanduser(), state.params)
        objective = GRPO()
        step = make_rl_step(RLLoss(init.graphdef, objective, accum_steps=TASKS * SAMPLES // MICRO), tx)
        engine = Engine(nnx.merge(init.graphdef, state.params, state.rest), max_len=D3.sequence_len)
        generator = RepoTasks(seed=1, kinds=["fix_bug", "implement", "locate"])
        rows = []
        for r in range(args.rounds + 1):  # round 0 compiles
            engine.load_weights(nnx.merge(init.graphdef, *jax.device_get((state.params, state.rest))))
            tasks = generator.tasks(TASKS, start=r * TASKS)
            t0, c0 = time.perf_counter(), cpu_seconds()
            rollouts = sample_episodes(
                engine, codec, tasks, samples=SAMPLES, tools=tools, system=system, max_steps=MAX_STEPS,
                max_new_tokens=MAX_NEW_TOKENS, round_index=r,
            )  # fmt: skip
            t1, c1 = time.perf_counter(), cpu_seconds()
            rewards = np.array([x.reward for x in rollouts], np.float32).reshape(TASKS, SAMPLES)
            batch = episode_batch(rollouts, objective.advantages(rewards), D3.sequence_len)
            state, metrics = step(state, None, batch)
            jax.block_until_ready(metrics)
            t2, c2 = time.perf_counter(), cpu_seconds()
            if r:
                m = episode_metrics(rollouts, SAMPLES)
                rows.append((t1 - t0, c1 - c0, t2 - t1, c2 - c1, batch["tokens"].shape[1], m))
    load_after = os.getloadavg()[0]

    def med(i):
        return statistics.median(row[i] for row in rows)

    episodes = TASKS * SAMPLES
    sample_s, step_s = med(0), med(2)
    lines = [
        "# RL episodes per second on CPU",
        "",
        f"Command: `.venv/bin/python benchmarks/rl.py --rounds {args.rounds}"
        + (f" --checkpoint {args.checkpoint}`" if args.checkpoint else "`"),
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()}); "
        f"{datetime.date.today()}; load average {load_before:.2f} before, {load_after:.2f} after.",
        "",
        f"The debug experiment's RL batch: {TASKS} training tasks x {SAMPLES} samples, at most {MAX_STEPS} replies of "
        f"{MAX_NEW_TOKENS} tokens, d3 at a 2,048-token context, "
        f"{'weights of ' + args.checkpoint if args.checkpoint else 'random weights'}; medians of {args.rounds} rounds "
        "after a compiling one. Sandboxes namespaced (the model is untrusted).",
        "",
        "| part | wall s | CPU s | per episode |",
        "|---|---|---|---|",
        f"| sampling (engine, tools, checks) | {sample_s:.2f} | {med(1):.2f} | {episodes / sample_s:.2f} episodes/s |",
        f"| train step (rows padded to {int(med(4))} tokens) | {step_s:.2f} | {med(3):.2f} | - |",
        f"| **RL step** | {sample_s + step_s:.2f} | {med(1) + med(3):.2f} | "
        f"**{episodes / (sample_s + step_s):.2f} episodes/s** |",
        "",
        "Per episode (means over the measured rounds): "
        + ", ".join(
            f"{k} {statistics.mean(row[5][k] for row in rows):.2f}"
            for k in ("mean_steps", "sampled_tokens", "episode_tokens", "reward", "stop/end_turn", "stop/budget")
        )
        + ".",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
