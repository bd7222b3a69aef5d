"""Constitutional AI data: rollout -> validation -> critique against the SOUL -> revision -> preference pair.

For each scenario prompt a teacher writes a rollout; it is checked programmatically (format, tool-result formats,
length) and against the constitution (its programmatic checks, then an LLM critique scored 1-10). A failing
attempt is revised with the problems fed back, up to `max_attempts`. The first failing attempt becomes `rejected`
and the attempt that passed `chosen`, with the principles the rejected side broke. Restyle mode turns existing SFT
conversations into pairs (chosen = assistant prose rewritten to the SOUL, rejected = the original).

Output (one directory): rollouts.jsonl (accepted), pairs.jsonl, exhausted.jsonl (no attempt passed), summary.json.
Every line is written whole and flushed, a scenario's pair before its rollout line (the line that marks it done). On
restart a torn last line is dropped, pairs without their rollout line are dropped, and ids already in
rollouts/exhausted are skipped, so a run killed at any point resumes without duplicating or losing a rollout.
Teacher failures are counted and retried on the next run, never fatal.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nanocode.align.teacher import Teacher, TeacherError
from nanocode.align.validation import validate_rollout
from nanocode.core.interfaces import Constitution, Messages
from nanocode.core.io import write_json, write_text
from nanocode.core.progress import Progress
from nanocode.data.conversation import ConversationCodec

ROLLOUT_SCHEMA = {
    "type": "object",
    "properties": {
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["user", "assistant", "tool_result"]},
                    "content": {"type": "string"},
                    "tool_call": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "args": {"type": "object"}},
                        "required": ["name", "args"],
                    },
                },
                "required": ["role", "content"],
            },
        }
    },
    "required": ["messages"],
}
CRITIQUE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer"},
        "critique": {"type": "string"},
        "principles_violated": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["score", "critique"],
}
RESTYLE_SCHEMA = {
    "type": "object",
    "properties": {"assistant": {"type": "array", "items": {"type": "string"}}},
    "required": ["assistant"],
}

TOOL_FORMATS = """tools: Read{file_path, offset?, limit?}, Edit{file_path, old_string?, new_string}, Grep{pattern, path?}, \
Bash{command}. roles: user, assistant (content and optionally one tool_call {name, args}), tool_result.
tool_result formats: Read and Edit results number every line as 5-character right-aligned numbers then '→' \
(e.g. '    1→import os'); Edit returns the path on the first line then the whole new file numbered; Grep returns \
'path:line:text' lines or 'no matches found'; Bash returns the raw output or '(no output)'; errors start with \
'error: '; a rejection is exactly 'rejected by user' and is followed by a user turn."""


@dataclass
class Attempt:
    messages: Messages
    problems: list[str] = field(default_factory=list)  # programmatic validation
    violations: list[tuple[str, str]] = field(default_factory=list)  # constitution checks: (principle, reason)
    score: int | None = None
    critique: str = ""
    critic_principles: list[str] = field(default_factory=list)

    def passed(self, min_score: int) -> bool:
        return not self.problems and not self.violations and (self.score is None or self.score >= min_score)

    def failed_principles(self) -> list[str]:
        names = [name for name, _ in self.violations] + self.critic_principles
        if self.problems:
            names.append("format")
        return sorted(set(names))

    def feedback(self) -> str:
        lines = [f"- {p}" for p in self.problems] + [f"- {name}: {reason}" for name, reason in self.violations]
        if self.critique:
            lines.append(f"- critic ({self.score}/10): {self.critique}")
        return "\n".join(lines)


class SynthPipeline:
    def __init__(
        self,
        teacher: Teacher,
        constitution: Constitution,
        *,
        codec: ConversationCodec | None = None,
        max_tokens: int = 4096,
        max_attempts: int = 4,
        min_score: int = 9,
        critique: bool = True,
        gold_rollouts: Iterable[Messages] = (),
        temperature: float = 0.2,
    ):
        self.teacher, self.constitution, self.codec = teacher, constitution, codec
        self.max_tokens, self.max_attempts, self.min_score = max_tokens, max_attempts, min_score
        self.critique_enabled, self.gold, self.temperature = critique, list(gold_rollouts), temperature

    # ------------------------------------------------------------------------------------------ one rollout
    def generator_messages(self, prompt: str, previous: Attempt | None) -> list[dict]:
        system = (
            f"you write training rollouts for nanocode, a terminal coding agent.\n{TOOL_FORMATS}\n"
            f"the agent personality, which every assistant turn must follow:\n{self.constitution.text}"
        )
        user = (
            f"Write a complete rollout of a user and the agent working together. The user's first request is: "
            f'{prompt!r}. Answer as JSON {{"messages": [...]}}.'
        )
        if self.gold:
            examples = "\n".join(json.dumps({"messages": g}) for g in self.gold)
            user += f"\nExamples of excellent rollouts:\n{examples}"
        if previous is not None:
            user += (
                f"\n\nYour previous rollout:\n{json.dumps({'messages': previous.messages})}\n"
                f"Its problems:\n{previous.feedback()}\nRevise it to fix every problem."
            )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def judge(self, messages: Messages) -> Attempt:
        attempt = Attempt(messages)
        attempt.problems = validate_rollout(messages, codec=self.codec, max_tokens=self.max_tokens)
        attempt.violations = self.constitution.violations(messages)
        if self.critique_enabled and not attempt.problems:
            names = [p.name for p in self.constitution.principles()]
            ask = [
                {
                    "role": "system",
                    "content": "you are a strict reviewer. do not penalise uppercase inside code, "
                    f"tool calls or proper nouns.\nthe constitution:\n{self.constitution.text}",
                },
                {
                    "role": "user",
                    "content": f"Rate this rollout 1-10 against the constitution and name the "
                    f"principles it breaks (from: {', '.join(names)}).\n{json.dumps({'messages': messages})}",
                },
            ]
            verdict = self.teacher.complete_json(ask, CRITIQUE_SCHEMA, temperature=0.5, max_tokens=512)
            attempt.score = int(verdict.get("score", 0))
            attempt.critique = " ".join(str(verdict.get("critique", "")).split())
            attempt.critic_principles = [n for n in verdict.get("principles_violated", []) if n in names]
        return attempt

    def run_one(self, prompt: str) -> tuple[Attempt | None, Attempt | None, list[Attempt]]:
        """(chosen, first failing attempt, all attempts). chosen is None when no attempt passed."""
        attempts: list[Attempt] = []
        previous = None
        for _ in range(self.max_attempts):
            reply = self.teacher.complete_json(
                self.generator_messages(prompt, previous), ROLLOUT_SCHEMA, temperature=self.temperature, max_tokens=8192
            )
            messages = reply.get("messages")
            attempt = self.judge(messages) if isinstance(messages, list) else Attempt([], ["reply has no messages"])
            attempts.append(attempt)
            if attempt.passed(self.min_score):
                rejected = next((a for a in attempts if not a.passed(self.min_score)), None)
                return attempt, rejected, attempts
            previous = attempt
        return None, attempts[0], attempts

    def restyle_one(self, messages: Messages) -> tuple[Attempt, Attempt]:
        """(restyled, original): only assistant prose is rewritten; tool calls and results stay byte-identical."""
        prose = [m.get("content") or "" for m in messages if m.get("role") == "assistant"]
        ask = [
            {
                "role": "system",
                "content": f"rewrite an agent's prose to follow this constitution:\n{self.constitution.text}",
            },
            {
                "role": "user",
                "content": "Rewrite each assistant message's prose (same count, same order; keep "
                f'code and identifiers exact). Answer as JSON {{"assistant": [...]}}.\n{json.dumps(prose)}',
            },
        ]
        rewritten = self.teacher.complete_json(ask, RESTYLE_SCHEMA, temperature=0.7, max_tokens=2048)["assistant"]
        if not isinstance(rewritten, list) or len(rewritten) != len(prose):
            raise TeacherError(
                f"restyle returned {len(rewritten) if isinstance(rewritten, list) else '?'} "
                f"strings for {len(prose)} assistant messages"
            )
        it = iter(rewritten)
        restyled = [{**m, "content": str(next(it))} if m.get("role") == "assistant" else m for m in messages]
        return self.judge(restyled), self.judge(messages)


# ---------------------------------------------------------------------------------------------- resumable files
class JsonlStore:
    """Append-only JSONL files written whole-line and flushed; a torn final line is dropped on open."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def read(self, name: str) -> list[dict]:
        path = self.dir / name
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").split("\n")
        records, good = [], []
        for line in lines:
            try:
                records.append(json.loads(line))
                good.append(line)
            except json.JSONDecodeError:
                continue  # the torn tail of an interrupted write
        if len(good) != len([ln for ln in lines if ln]):
            write_text(path, "".join(ln + "\n" for ln in good))  # repair atomically
        return records

    def keep_first(self, name: str, ids: set) -> None:
        """Keep only the first record of each id in `ids` (rewritten atomically, when anything goes)."""
        records, seen = self.read(name), set()
        kept = [r for r in records if r["id"] in ids and not (r["id"] in seen or seen.add(r["id"]))]
        if len(kept) != len(records):
            write_text(self.dir / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))

    def append(self, name: str, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock, open(self.dir / name, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def synthesize(
    pipeline: SynthPipeline, scenarios: list[dict], out_dir: str | Path, *, workers: int = 4, progress: bool = True
) -> dict:
    """Run the pipeline over scenarios ({"id", "prompt"}), resuming; returns and writes the summary counts."""
    store = JsonlStore(out_dir)
    accepted = {r["id"] for r in store.read("rollouts.jsonl")}
    done = accepted | {r["id"] for r in store.read("exhausted.jsonl")}
    store.keep_first("pairs.jsonl", accepted)  # a pair whose rollout line never landed is made again below
    todo = [s for s in scenarios if s["id"] not in done]
    counts: Counter = Counter(skipped_done=len(scenarios) - len(todo))
    reasons: Counter = Counter()

    def work(scenario: dict) -> None:
        try:
            chosen, rejected, attempts = pipeline.run_one(scenario["prompt"])
        except TeacherError as e:
            counts["teacher_failed"] += 1
            reasons[str(e)[:120]] += 1
            return
        for a in attempts:
            reasons.update(a.failed_principles())
        if chosen is None:
            store.append(
                "exhausted.jsonl",
                {"id": scenario["id"], "prompt": scenario["prompt"], "last_feedback": attempts[-1].feedback()},
            )
            counts["exhausted"] += 1
            return
        if rejected is not None:
            store.append(
                "pairs.jsonl",
                {
                    "id": scenario["id"],
                    "prompt": scenario["prompt"],
                    "chosen": {"messages": chosen.messages},
                    "rejected": {"messages": rejected.messages},
                    "rejected_fails": rejected.failed_principles(),
                },
            )
            counts["pairs"] += 1
        store.append(
            "rollouts.jsonl",
            {
                "id": scenario["id"],
                "prompt": scenario["prompt"],
                "messages": chosen.messages,
                "attempts": len(attempts),
            },
        )
        counts["accepted"] += 1

    with Progress(len(todo), "synth", unit="scenario", enabled=progress) as bar:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(work, todo):
                bar.update(1, postfix=f"accepted {counts['accepted']} pairs {counts['pairs']}")
    summary = {"counts": dict(counts), "failed_principles": dict(reasons)}
    if isinstance(getattr(pipeline.teacher, "stats", None), dict):
        summary["teacher"] = dict(pipeline.teacher.stats)  # requests, retries, rate limits, tokens
    write_json(Path(out_dir) / "summary.json", summary)
    return summary
