"""Reinforcement learning from execution rewards: the aligned model solves training repo tasks and is pushed towards
the episodes whose hidden check passed, with an objective chosen by name in gin (`RLTraining.objective = @grpo()`;
a plugin's `rl_objective` works the same way).

    nanocode rl --gin_file experiments/<experiment>.gin [--resume [--force]]

Each step samples `samples_per_task` whole episodes of each of `batch_size / samples_per_task` training tasks with
the current policy (agents/rl_episodes.py: the KV engine in batch, the real tools in sandboxes), rewards each with
its task's check, turns the rewards into group-relative advantages (the objective's) and takes one optimizer step on
the policy's own tokens (train/rl_step.py). Task i of step s is task s * tasks_per_step + i of the task generator
(training templates only: the eval's held-out families are never seen), so a resumed run continues with the tasks
and seeds it would have drawn. The policy starts from the latest checkpoint of `init_from` (align), which is also
the frozen reference of a KL penalty.

Metrics per step (metrics.jsonl): reward, success, mean_steps, episode and sampled tokens, valid tool calls, how
episodes ended, groups_with_signal, and from the step loss, entropy, kl (with a reference), grad_norm, lr;
samples.jsonl holds one episode per task at each sample step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from flax import nnx

from nanocode.agents.policy import system_prompt
from nanocode.agents.rl_episodes import Rollout, episode_metrics, sample_episodes
from nanocode.agents.tasks import RepoTasks
from nanocode.agents.tools import build_tools
from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import fingerprint
from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import RLObjective
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine, next_power_of_two
from nanocode.models.sampling import SamplingParams
from nanocode.train.finetune import FinetuneRun, Finetuning, restore_params
from nanocode.train.rl_step import RLLoss, make_rl_step

STAGE = "rl"
MIN_WIDTH = 64  # rows are padded to a power of two >= this (few shapes: few compilations)


@dataclass(frozen=True, kw_only=True)
class RLTraining(Finetuning):
    """On-policy RL on agentic tasks. `batch_size` counts episodes per step (tasks x samples_per_task)."""

    objective: RLObjective = field(repr=False)
    tasks: Any = field(default_factory=lambda: RepoTasks(seed=1), repr=False)  # a task generator: .task(i) -> Task
    samples_per_task: int = 4  # the group of each task (its advantages are relative to the group's rewards)
    max_steps: int = 4  # assistant replies per episode
    max_new_tokens: int = 96  # per reply
    temperature: float = 1.0  # 1: the model's own distribution (the log-probs trained on are the sampler's)
    task_timeout_s: float = 30.0  # per command in the sandbox
    isolate: bool = True  # namespaces for the model's commands (it is untrusted)
    tool_workers: int = 4  # tool calls of one turn run in parallel threads
    reward: Callable | None = field(default=None, repr=False)  # (task, messages, sandbox) -> float; None: the check
    init_from: str = "align"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.objective, RLObjective):
            self.invalid(f"objective: expected an RLObjective (e.g. @grpo()), got {type(self.objective).__name__}")
        if not callable(getattr(self.tasks, "task", None)):
            self.invalid(f"tasks: {type(self.tasks).__name__} is not a task generator (e.g. @repo_tasks())")
        if self.num_steps == -1:
            self.invalid("num_steps = -1: an RL run has no data to pass over; set the number of steps")
        if self.samples_per_task < 2 or self.batch_size % self.samples_per_task:
            self.invalid(
                f"samples_per_task = {self.samples_per_task}: must be >= 2 (advantages are relative to the group) and "
                f"divide batch_size = {self.batch_size}"
            )
        for name in ("max_steps", "max_new_tokens", "tool_workers"):
            if getattr(self, name) < 1:
                self.invalid(f"{name} = {getattr(self, name)}: must be >= 1")
        try:
            SamplingParams(self.temperature)
        except ValueError as e:
            self.invalid(f"temperature: {e}")
        if self.task_timeout_s <= 0:
            self.invalid(f"task_timeout_s = {self.task_timeout_s}: must be > 0")

    @property
    def tasks_per_step(self) -> int:
        return self.batch_size // self.samples_per_task

    def make_run(self, workspace: Workspace, **options) -> RLRun:
        return RLRun(self, workspace, **options)


register_config(RLTraining)


def episode_batch(rollouts: list[Rollout], advantages: np.ndarray, max_len: int) -> dict[str, np.ndarray]:
    """The train step's rows: each episode cut after its last sampled token, padded (mask 0) to a shared width."""
    ends = [max((j for j, m in enumerate(r.mask) if m), default=1) + 1 for r in rollouts]
    width = min(next_power_of_two(max(max(ends) - 1, MIN_WIDTH)), max_len) + 1
    tokens = np.zeros((len(rollouts), width), np.int32)
    mask = np.zeros((len(rollouts), width), np.int32)
    for i, (r, end) in enumerate(zip(rollouts, ends)):
        end = min(end, width)
        tokens[i, :end], mask[i, :end] = r.tokens[:end], r.mask[:end]
    return {"tokens": tokens, "mask": mask, "advantages": np.asarray(advantages, np.float32).reshape(-1)}


def _plain(value: Any) -> bool:
    return isinstance(value, int | float | str | type(None)) or (
        isinstance(value, list | tuple) and all(isinstance(v, int | float | str) for v in value)
    )


class EpisodeBatches:
    """The training batches: each `next` samples a fresh round of episodes with the run's current policy. Its
    position (the rounds drawn) is saved with every checkpoint."""

    def __init__(self, run: RLRun):
        self.run, self.round = run, 0
        self.last_metrics: dict[str, Any] = {}
        self.last_rollouts: list[Rollout] = []

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch, self.last_rollouts, self.last_metrics = self.run.sample_round(self.round)
        self.round += 1
        return batch

    def state(self) -> dict:
        return {"round": self.round}

    def restore(self, state: dict) -> None:
        self.round = int(state["round"])


class RLRun(FinetuneRun):
    stage = STAGE

    def prepare_data(self):
        exp = self.exp
        if jax.process_count() > 1:
            raise ConfigError("nanocode rl samples its episodes on one process: run it on a single host")
        self.tools = build_tools()
        self.system = system_prompt(self.tools) if exp.system_prompt is None else exp.system_prompt
        generator = exp.tasks
        self.data_spec = fingerprint(
            {
                "tasks": [type(generator).__name__, {k: v for k, v in vars(generator).items() if _plain(v)}],
                "first_task": generator.task(0).to_dict(),
                "samples_per_task": exp.samples_per_task,
                "batch_size": exp.batch_size,
                "max_steps": exp.max_steps,
                "max_new_tokens": exp.max_new_tokens,
                "temperature": exp.temperature,
                "system": self.system,
            }
        )
        self.batches = EpisodeBatches(self)
        return self.batches

    def build_step(self, init, tx):
        exp = self.exp
        self.loss = RLLoss(
            init.graphdef,
            exp.objective,
            accum_steps=exp.accum_steps,
            remat=exp.remat,
            micro_sharding=mesh_lib.batch_sharding(self.mesh, self.rules),
        )
        return make_rl_step(
            self.loss,
            tx,
            state_shardings=init.shardings,
            ref_shardings=init.shardings.params if exp.objective.needs_reference else None,
            learning_rate=exp.learning_rate(self.num_steps),
        )

    def start(self, state) -> None:
        self.state = state
        self.ref_params = None
        if self.exp.objective.needs_reference:  # the starting checkpoint's parameters, read again (also on resume)
            self.ref_params = restore_params(self.init_dir, self.init.state.params)
        self.engine = Engine(self.policy_model(state), max_len=self.exp.seq_len)

    def policy_model(self, state) -> nnx.Module:
        """The current policy as a model on the host's default device (the engine decodes unsharded)."""
        params, rest = jax.device_get((state.params, state.rest))
        return nnx.merge(self.init.graphdef, params, rest)

    def train(self, state, batch):
        self.state, metrics = self.train_step(state, self.ref_params, batch)
        return self.state, metrics

    def sample_round(self, round_index: int) -> tuple[dict[str, np.ndarray], list[Rollout], dict[str, Any]]:
        """One step's episodes, sampled with the latest policy: (batch, rollouts, their metrics)."""
        exp = self.exp
        started = time.perf_counter()
        self.engine.load_weights(self.policy_model(self.state))
        first = round_index * exp.tasks_per_step
        tasks = [exp.tasks.task(first + i) for i in range(exp.tasks_per_step)]
        sampling = SamplingParams(temperature=exp.temperature, seed=exp.seed)
        rollouts = sample_episodes(
            self.engine, ConversationCodec(self.tokenizer), tasks, samples=exp.samples_per_task, tools=self.tools,
            system=self.system, max_steps=exp.max_steps, max_new_tokens=exp.max_new_tokens, sampling=sampling,
            round_index=round_index, timeout_s=exp.task_timeout_s, isolate=exp.isolate,
            workers=exp.tool_workers, **({"reward": exp.reward} if exp.reward is not None else {}),
        )  # fmt: skip
        rewards = np.asarray([r.reward for r in rollouts], np.float32).reshape(len(tasks), exp.samples_per_task)
        advantages = exp.objective.advantages(rewards)
        metrics = episode_metrics(rollouts, exp.samples_per_task)
        seconds = time.perf_counter() - started
        metrics.update(sample_seconds=seconds, episodes_per_s=len(rollouts) / seconds)
        return episode_batch(rollouts, advantages, exp.seq_len), rollouts, metrics

    def batch_metrics(self, batches) -> dict:
        return dict(batches.last_metrics)

    def sample(self, step: int, state) -> None:
        """One episode of each task of the batch just trained on (its first sample), with its reward."""
        for r in self.batches.last_rollouts[:: self.exp.samples_per_task]:
            record = {"step": step, "task_id": r.task.id, "template": r.task.template, "reward": r.reward}
            messages = [m for m in r.messages if m["role"] != "system"]
            self.samples.log({**record, "stop_reason": r.stop_reason, "messages": messages})

    def postfix(self, record: dict) -> str:
        return f"reward {record.get('reward', 0.0):.3f} | success {record.get('success', 0.0):.2f}"

    def announce(self, peak_desc: str) -> str:
        exp = self.exp
        return (
            f"rl: {self.num_steps} steps of {exp.tasks_per_step} tasks x {exp.samples_per_task} samples "
            f"(at most {exp.max_steps} replies of {exp.max_new_tokens} tokens each)"
        )
