"""Whole agentic episodes sampled on-policy for RL, in batch: every (task, sample) pair is one row of one KV cache.

All rows advance turn by turn together. Each turn the engine feeds every live row what is new to it (the prompt, or
the last tool result and `<|assistant_start|>`) and samples its reply, all rows in one batched `generate`; each
reply is parsed as the agent parses it (`TurnDecoder`), a tool call runs with the real tools in that row's own
sandboxed copy of the task's repository (the rows' calls run in parallel threads), and its result is appended. A row
stops, as `rollouts.run_episode`, when its reply makes no call (end_turn), a malformed one (malformed_call), when the
step budget is spent (budget), or when what comes next no longer fits its cache (context). Then the task's own hidden
check judges the workspace (or the answer): reward 1 when it passes, else 0.

A row's tokens are exactly what the model was fed and sampled, in order: the mask is 1 on the tokens it sampled
(its replies, their stop token included) and 0 on everything the harness wrote (prompt, tool results, the
`<|assistant_end|>` that closes a turn ended by a tool call or the token budget). Sampling uses the model's own
distribution (temperature 1, no top-k, by default), so the log-probs the train step computes are those of the
sampling policy. Every row draws from its own seed: the samples of one task differ.

Each row's repository lives at `<task base>/rl/<row>/<repo>` (locked, wiped before and after, as for any task).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from nanocode.agents.chat_session import TurnDecoder, stop_ids
from nanocode.agents.rollouts import execute
from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tasks import Task, open_sandbox, run_check, task_workspace
from nanocode.agents.tasks.workspace import task_base
from nanocode.agents.tools import Tool
from nanocode.data.conversation import ConversationCodec, Message
from nanocode.models.engine import Engine
from nanocode.models.sampling import SamplingParams

ON_POLICY = SamplingParams(temperature=1.0)  # the model's own distribution: no temperature, top-k or top-p
# (task, the episode's messages, its sandbox) -> reward; the default is the task's own hidden check.
Reward = Callable[[Task, list[Message], Sandbox], float]


def check_reward(task: Task, messages: list[Message], sandbox: Sandbox) -> float:
    return 1.0 if run_check(task, messages, sandbox).passed else 0.0


@dataclass
class Rollout:
    task: Task
    sample: int  # which of the task's samples
    tokens: list[int]  # bos, prompt, replies, tool results: what the model was fed and sampled
    mask: list[int]  # 1 on the tokens the model sampled
    messages: list[Message] = field(default_factory=list)
    steps: int = 0  # replies
    tool_calls: int = 0
    valid_tool_calls: int = 0
    stop_reason: str = "budget"  # end_turn | malformed_call | budget | context
    reward: float = 0.0

    def add(self, ids: Sequence[int], sampled: bool) -> None:
        self.tokens += ids
        self.mask += [int(sampled)] * len(ids)


def row_seed(seed: int, round_index: int, row: int) -> int:
    return zlib.crc32(f"rl:{seed}:{round_index}:{row}".encode())


def sample_episodes(
    engine: Engine,
    codec: ConversationCodec,
    tasks: Sequence[Task],
    *,
    samples: int,
    tools: Mapping[str, Tool],
    system: str,
    max_steps: int,
    max_new_tokens: int,
    sampling: SamplingParams = ON_POLICY,
    round_index: int = 0,
    timeout_s: float = 30.0,
    isolate: bool = True,
    reward: Reward = check_reward,
    workers: int = 4,
) -> list[Rollout]:
    """`samples` episodes of each task, rows ordered task by task (see the module docstring)."""
    rows = [Rollout(task, g, [], []) for task in tasks for g in range(samples)]
    params = [replace(sampling, seed=row_seed(sampling.seed, round_index, i)) for i in range(len(rows))]
    cache = engine.new_cache(len(rows))
    end, start = codec.ids["assistant_end"], codec.ids["assistant_start"]
    stops = stop_ids(codec)
    base = task_base() / "rl"
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max(1, min(workers, len(rows)))) as pool:
        sandboxes = []
        for i, row in enumerate(rows):
            (base / str(i)).mkdir(parents=True, exist_ok=True)
            root = stack.enter_context(task_workspace(row.task, base / str(i)))
            sandboxes.append(stack.enter_context(open_sandbox(root, timeout_s=timeout_s, isolate=isolate)))
            row.messages = [{"role": "system", "content": system}] if system else []
            row.messages.append({"role": "user", "content": row.task.request})
            row.add(codec.render_prompt(row.messages), sampled=False)
        live = list(range(len(rows)))
        for _ in range(max_steps):
            for i in list(live):  # what is new to the row must fit its cache, with room for a reply
                if len(rows[i].tokens) + 1 > engine.max_len:
                    rows[i].stop_reason = "context"
                    live.remove(i)
            if not live:
                break
            new = [rows[i].tokens[int(cache.lengths[i]) :] if i in live else [] for i in range(len(rows))]
            limits = [max_new_tokens if i in live else 0 for i in range(len(rows))]
            replies: list[list[int]] = [[] for _ in rows]
            for column in engine.generate(cache, new, params, max_new_tokens=limits, stop_ids=stops):
                for i, token in enumerate(column):
                    if token is not None:
                        replies[i].append(token)
            calls = []
            for i in live:
                row, reply = rows[i], replies[i]
                decoder = TurnDecoder(codec)
                for token in reply:
                    decoder.push(token)
                message = decoder.message()
                row.add(reply, sampled=True)
                if not reply or reply[-1] != end:
                    row.add([end], sampled=False)  # the format closes every turn
                row.messages.append(message)
                row.steps += 1
                if "tool_call_error" in message:
                    row.tool_calls += 1
                    row.stop_reason = "malformed_call"
                elif "tool_call" not in message:
                    row.stop_reason = "end_turn"
                else:
                    calls.append(i)
            results = pool.map(lambda i: execute(rows[i].messages[-1]["tool_call"], tools, sandboxes[i]), calls)
            for i, (result, ok) in zip(calls, results):
                row = rows[i]
                row.tool_calls += 1
                row.valid_tool_calls += ok
                row.messages.append({"role": "tool_result", "content": result.text})
                text = codec.tok.encode(result.text) if result.text else []
                row.add([codec.ids["tool_result_start"], *text, codec.ids["tool_result_end"], start], sampled=False)
            live = calls  # rows that made a call go on; the others ended their episode
        judged = pool.map(lambda i: reward(rows[i].task, rows[i].messages, sandboxes[i]), range(len(rows)))
        for row, value in zip(rows, judged):
            row.reward = float(value)
    return rows


def episode_metrics(rollouts: Sequence[Rollout], samples: int) -> dict[str, Any]:
    """Means over the batch's episodes: reward, success (reward 1), steps, tokens, tool-call validity, how episodes
    ended, and the share of task groups whose samples disagree (the only ones that give a gradient)."""
    n = len(rollouts)
    calls = sum(r.tool_calls for r in rollouts)
    groups = [rollouts[i : i + samples] for i in range(0, n, samples)]
    out: dict[str, Any] = {
        "reward": sum(r.reward for r in rollouts) / n,
        "success": sum(r.reward >= 1.0 for r in rollouts) / n,
        "mean_steps": sum(r.steps for r in rollouts) / n,
        "episode_tokens": sum(len(r.tokens) for r in rollouts) / n,
        "sampled_tokens": sum(sum(r.mask) for r in rollouts) / n,
        "valid_tool_call_rate": sum(r.valid_tool_calls for r in rollouts) / calls if calls else 0.0,
        "groups_with_signal": sum(len({r.reward for r in g}) > 1 for g in groups) / len(groups),
    }
    for reason in ("end_turn", "malformed_call", "budget", "context"):
        out[f"stop/{reason}"] = sum(r.stop_reason == reason for r in rollouts) / n
    return out
