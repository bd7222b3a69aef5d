"""Execution-grounded rollouts: policies driven through the real tools in a sandbox, and the agentic data built so.

`run_episode(task, policy)` is the one agent loop used for data and for the eval: the task's repository is written
to its workspace, the policy is asked for assistant messages, each tool call is validated and executed by the real
tools (Read, Edit, Grep, Bash in the sandbox), its result appended as a tool_result, until the policy ends its turn
without a tool call or the step budget runs out; then the hidden check judges the workspace (or the answer).

`build_agentic_data(out_dir, count, seed)` replays each training task's scripted solution that way (so every
tool_result is what the tool really returned), checks that it passes the hidden check and every programmatic SOUL
check, and replays SOUL-breaking variants of it (`tasks.variants`) to make preference pairs whose rejected side
breaks exactly its named principle (asserted with the constitution's checks). It writes

    sft_train.jsonl, sft_test.jsonl      {"id", "kind", "template", "messages"} per task
    pairs_train.jsonl, pairs_test.jsonl  {"id", "task_id", "principle", "reason", "chosen", "rejected", ...}
    manifest.json                        parameters and counts, written last

Task i goes to the test split when i % test_every == 0, with its pairs, so no test task is trained on. The output
depends only on (seed, count, test_every, pairs_per_task, kinds): tasks are pure functions of (seed, i), the
workspace path is fixed, and records are written in task order. Finished tasks are appended to `.parts/` as they
complete, so an interrupted build resumes where it stopped; the final files are written atomically.

CLI: `python -m nanocode.agents.rollouts OUT_DIR --count 256 --seed 0`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanocode.agents.policy import Policy, ScriptedPolicy, system_prompt
from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tasks import RepoTasks, Script, Task, open_sandbox, run_check, task_workspace, variants
from nanocode.agents.tasks.base import CheckResult
from nanocode.agents.tasks.generator import DEFAULT_DOMAINS
from nanocode.agents.tools import Tool, ToolError, ToolResult, build_tools
from nanocode.align.constitution import SoulConstitution
from nanocode.core.errors import ConfigError, DataError
from nanocode.core.interfaces import Constitution, Messages
from nanocode.core.io import read_jsonl, write_json, write_text
from nanocode.core.kinds import PREFERENCE_DATASETS, SFT_DATASETS
from nanocode.core.progress import Progress
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import Message
from nanocode.data.preference import JSONLPreferences
from nanocode.data.sft import JSONLConversations

FORMAT_VERSION = 5  # bump when scripted solutions change, so built data is rebuilt (5: locate recovers from a miss)
FILES = ("sft_train.jsonl", "sft_test.jsonl", "pairs_train.jsonl", "pairs_test.jsonl")


# -- the agent loop -------------------------------------------------------------------------------------------------
@dataclass
class Episode:
    task: Task
    messages: list[Message]
    steps: int  # assistant messages produced
    tool_calls: int
    valid_tool_calls: int  # known tool, arguments valid: executed
    stop_reason: str  # end_turn | budget | malformed_call
    check: CheckResult


def execute(call: Mapping[str, Any], tools: Mapping[str, Tool], sandbox: Sandbox) -> tuple[ToolResult, bool]:
    """Run one tool call; (result, valid). An unknown tool or invalid arguments is an error result, not run."""
    name, args = call.get("name"), call.get("args")
    if name not in tools:
        return ToolError(f"unknown tool {name!r} (tools: {', '.join(tools)})"), False
    if not isinstance(args, Mapping):
        return ToolError(f"arguments of {name} must be a mapping"), False
    problem = tools[name].validate(args)
    if problem is not None:
        return problem, False
    return tools[name](args, sandbox), True


def _assistant(message: Mapping[str, Any]) -> Message:
    """The policy's message in nanocode's format (role forced, argument values as the strings the wire carries)."""
    out: Message = {"role": "assistant", "content": str(message.get("content") or "")}
    if message.get("tool_call_error"):
        out["tool_call_error"] = str(message["tool_call_error"])
    elif message.get("tool_call"):
        call = message["tool_call"]
        args = call.get("args")
        out["tool_call"] = {
            "name": str(call.get("name")),
            "args": {str(k): str(v) for k, v in args.items()} if isinstance(args, Mapping) else args,
        }
    if message.get("train") is False:  # a scripted mistake, kept out of the loss (nanocode.data.conversation)
        out["train"] = False
    return out


def run_episode(
    task: Task,
    policy: Policy,
    *,
    max_steps: int = 30,
    timeout_s: float = 30.0,
    isolate: bool = True,
    tools: Mapping[str, Tool] | None = None,
    base: Path | None = None,
    system: str | None = None,
) -> Episode:
    """One episode of `policy` on `task` in a fresh workspace (see the module docstring). There is no user to ask:
    Edit and Bash run without the permission prompt, contained by the sandbox. `system`: the system prompt (None:
    nanocode's, listing `tools`; '': none)."""
    tools = build_tools() if tools is None else tools
    system = system_prompt(tools) if system is None else system
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": task.request})
    policy.start(task.id)
    steps = calls = valid = 0
    stop = "budget"
    with task_workspace(task, base) as root, open_sandbox(root, timeout_s=timeout_s, isolate=isolate) as sandbox:
        while steps < max_steps:
            message = _assistant(policy.act([dict(m) for m in messages]))
            messages.append(message)
            steps += 1
            if "tool_call_error" in message:  # nothing to run, and the format has no place for its result
                calls += 1
                stop = "malformed_call"
                break
            if "tool_call" not in message:
                stop = "end_turn"
                break
            result, ok = execute(message["tool_call"], tools, sandbox)
            calls += 1
            valid += ok
            messages.append({"role": "tool_result", "content": result.text})
        check = run_check(task, messages, sandbox)
    return Episode(task, messages, steps, calls, valid, stop, check)


def replay(task: Task, script: Script, **kw: Any) -> Episode:
    """A scripted solution (or variant) through the real tools; ScriptMismatch if a result contradicts it."""
    return run_episode(task, ScriptedPolicy(script), max_steps=len(script.steps) + 1, **kw)


def soul_violations(messages: Messages, constitution: Constitution | None = None) -> dict[str, str]:
    """{principle: reason} for every principle whose programmatic check the conversation fails."""
    constitution = SoulConstitution() if constitution is None else constitution
    out = {}
    for principle in constitution.principles():
        if principle.check is not None:
            reason = principle.check(messages)
            if reason is not None:
                out[principle.name] = reason
    return out


# -- the data -------------------------------------------------------------------------------------------------------
def task_record(
    task: Task,
    index: int,
    *,
    seed: int,
    split: str,
    pairs_per_task: int,
    constitution: Constitution,
    **episode_kw: Any,
) -> dict[str, Any]:
    """The SFT conversation and preference pairs of one task, all really executed and checked."""
    good = replay(task, task.solution, **episode_kw)
    if not good.check.passed:
        raise DataError(
            f"{task.id} ({task.template}): the scripted solution fails its hidden check: {good.check.detail}"
        )
    broken = soul_violations(good.messages, constitution)
    if broken:
        raise DataError(f"{task.id} ({task.template}): the scripted solution breaks the SOUL: {broken}")
    rng = random.Random(f"pairs:{seed}:{index}")
    options = variants(task, rng)
    pairs = []
    for principle in rng.sample(sorted(options), min(pairs_per_task, len(options))):
        bad = replay(task, options[principle], **episode_kw)
        found = soul_violations(bad.messages, constitution)
        if set(found) != {principle}:
            raise DataError(f"{task.id}: the {principle} variant breaks {sorted(found)} instead of just {principle}")
        pairs.append(
            {
                "id": f"{task.id}/{principle}",
                "task_id": task.id,
                "kind": task.kind,
                "template": task.template,
                "split": split,
                "principle": principle,
                "reason": found[principle],
                "rejected_check_passed": bad.check.passed,
                "chosen": {"messages": good.messages},
                "rejected": {"messages": bad.messages},
            }
        )
    sft = {"id": task.id, "kind": task.kind, "template": task.template, "messages": good.messages}
    return {"index": index, "split": split, "sft": sft, "pairs": pairs}


def build_agentic_data(
    out_dir: str | os.PathLike,
    *,
    count: int = 256,
    seed: int = 0,
    test_every: int = 20,
    pairs_per_task: int = 1,
    kinds: Sequence[str] | None = None,
    domains: str | None = None,
    workers: int | None = None,
    timeout_s: float = 30.0,
    isolate: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the agentic SFT conversations and preference pairs into `out_dir` (see the module docstring) and return
    the manifest. `isolate=False` runs the scripted (trusted) commands without namespaces, about twice as fast; the
    tool results are the same. Nothing is redone when a manifest with the same parameters is there."""
    if count < 2 or test_every < 2:
        raise ConfigError(
            f"agentic data needs count >= 2 and test_every >= 2 (got count={count}, test_every={test_every})"
        )
    out = Path(out_dir)
    params = {
        "generator": "repo_tasks",
        "seed": seed,
        "count": count,
        "test_every": test_every,
        "pairs_per_task": pairs_per_task,
        "kinds": sorted(kinds) if kinds else None,
        "domains": RepoTasks(seed, kinds=kinds, domains=domains).domains,
        "format_version": FORMAT_VERSION,
    }
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per directory: a second one waits, then finds the manifest
        manifest_path = out / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("params") == params and all((out / f).is_file() for f in FILES):
                return manifest
        records = _run_tasks(
            out / ".parts", params, workers=workers, timeout_s=timeout_s, isolate=isolate, progress=progress
        )
        for split in ("train", "test"):
            mine = [r for r in records if r["split"] == split]
            write_text(out / f"sft_{split}.jsonl", "".join(json.dumps(r["sft"]) + "\n" for r in mine))
            write_text(out / f"pairs_{split}.jsonl", "".join(json.dumps(p) + "\n" for r in mine for p in r["pairs"]))
        manifest = {
            "params": params,
            "conversations": {s: sum(r["split"] == s for r in records) for s in ("train", "test")},
            "pairs": {s: sum(len(r["pairs"]) for r in records if r["split"] == s) for s in ("train", "test")},
            "kinds": dict(sorted(Counter(r["sft"]["kind"] for r in records).items())),
            "principles": dict(sorted(Counter(p["principle"] for r in records for p in r["pairs"]).items())),
            "files": list(FILES),
        }
        write_json(manifest_path, manifest)
        shutil.rmtree(out / ".parts", ignore_errors=True)
        return manifest


def _run_tasks(
    parts_dir: Path, params: dict[str, Any], *, workers: int | None, timeout_s: float, isolate: bool, progress: bool
) -> list[dict[str, Any]]:
    """Every task's record in task order, resuming from (and appending to) `parts_dir`."""
    count, seed = params["count"], params["seed"]
    resume_key = {k: v for k, v in params.items() if k != "count"}  # a larger count extends a smaller run
    key_file, parts_file = parts_dir / "params.json", parts_dir / "records.jsonl"
    if not key_file.is_file() or json.loads(key_file.read_text(encoding="utf-8")) != resume_key:
        shutil.rmtree(parts_dir, ignore_errors=True)
        write_json(key_file, resume_key)
    done = {r["index"]: r for r in read_jsonl(parts_file) if r["index"] < count}
    write_text(parts_file, "".join(json.dumps(done[i]) + "\n" for i in sorted(done)))  # without a torn line

    constitution = SoulConstitution()
    generator = RepoTasks(seed, kinds=params["kinds"], domains=params["domains"])
    tools = build_tools()
    todo = [i for i in range(count) if i not in done]

    def one(index: int) -> dict[str, Any]:
        split = "test" if index % params["test_every"] == 0 else "train"
        return task_record(
            generator.task(index), index, seed=seed, split=split, pairs_per_task=params["pairs_per_task"],
            constitution=constitution, timeout_s=timeout_s, isolate=isolate, tools=tools,
        )  # fmt: skip

    with (
        ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool,
        Progress(len(todo), "agentic rollouts", unit="task", enabled=progress) as bar,
    ):
        futures = [pool.submit(one, i) for i in todo]
        try:
            for future in as_completed(futures):
                record = future.result()
                with open(parts_file, "a", encoding="utf-8") as f:  # this thread only: appends never interleave
                    f.write(json.dumps(record) + "\n")  # key order kept: tool arguments render in dict order
                done[record["index"]] = record
                bar.update(1)
        except BaseException:
            for future in futures:  # a failure or Ctrl-C: do not start the rest (finished ones are saved)
                future.cancel()
            raise
    return [done[i] for i in range(count)]


# -- as registered datasets (built on first use into the workspace) ------------------------------------------------
def default_data_dir(seed: int, count: int, kinds: Sequence[str] | None = None, domains: str | None = None) -> Path:
    suffix = f"-{'+'.join(sorted(kinds))}" if kinds else ""
    suffix += f"-{domains}" if domains and domains != DEFAULT_DOMAINS["train"] else ""
    return Workspace().sft_data_dir(f"repo_tasks-s{seed}-n{count}{suffix}")


class _BuiltOnPrepare:
    """Shared by the two registered datasets: where the data lives and how `prepare()` builds it."""

    def _setup(
        self,
        count: int,
        seed: int,
        kinds: Sequence[str] | None,
        domains: str | None,
        directory: str | None,
        workers: int | None,
    ):
        self.count, self.seed, self.workers, self.domains = count, seed, workers, domains
        self.kinds = list(kinds) if kinds else None
        self.directory = Path(directory) if directory else default_data_dir(seed, count, self.kinds, domains)

    def prepare(self) -> None:
        build_agentic_data(
            self.directory, count=self.count, seed=self.seed, kinds=self.kinds, domains=self.domains,
            workers=self.workers,
        )  # fmt: skip


@SFT_DATASETS.register("repo_task_conversations")
class RepoTaskConversations(_BuiltOnPrepare, JSONLConversations):
    """Agentic SFT conversations from execution-grounded repo tasks (built offline on first use)."""

    def __init__(
        self,
        count: int = 256,
        seed: int = 0,
        kinds: Sequence[str] | None = None,
        domains: str | None = None,
        directory: str | None = None,
        workers: int | None = None,
    ):
        self._setup(count, seed, kinds, domains, directory, workers)
        JSONLConversations.__init__(
            self, str(self.directory / "sft_train.jsonl"), str(self.directory / "sft_test.jsonl")
        )
        self.name = self.directory.name


@PREFERENCE_DATASETS.register("repo_task_pairs")
class RepoTaskPairs(_BuiltOnPrepare, JSONLPreferences):
    """Preference pairs from repo tasks: chosen = the good rollout, rejected = a replay breaking one SOUL rule."""

    def __init__(
        self,
        count: int = 256,
        seed: int = 0,
        kinds: Sequence[str] | None = None,
        domains: str | None = None,
        directory: str | None = None,
        workers: int | None = None,
    ):
        self._setup(count, seed, kinds, domains, directory, workers)
        JSONLPreferences.__init__(
            self, str(self.directory / "pairs_train.jsonl"), str(self.directory / "pairs_test.jsonl")
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanocode.agents.rollouts", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--count", type=int, default=256, help="tasks (one SFT conversation each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test_every", type=int, default=20, help="task i is held out when i %% test_every == 0")
    parser.add_argument("--pairs_per_task", type=int, default=1)
    parser.add_argument("--kinds", nargs="*", default=None, help="fix_bug implement rename locate (default: all)")
    parser.add_argument(
        "--domains", choices=("varied", "fixed"), default=None, help="repository names (default varied)"
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--isolate", action="store_true", help="run commands in namespaces (slower, same results)")
    args = parser.parse_args(argv)
    manifest = build_agentic_data(
        args.out_dir, count=args.count, seed=args.seed, test_every=args.test_every,
        pairs_per_task=args.pairs_per_task, kinds=args.kinds, domains=args.domains, workers=args.workers,
        isolate=args.isolate,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in manifest.items() if k != "files"}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
