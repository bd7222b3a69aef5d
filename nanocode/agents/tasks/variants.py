"""Scripted solutions that break one SOUL principle each: the rejected side of a preference pair.

Each variant changes the good script just enough to break its principle and nothing else, so a pair teaches that
one thing. The variant is replayed through the real tools like the good one (its tool results are real).

- read-before-edit: the Reads of every file the script edits are dropped (the Edits still apply);
- verify-before-done: everything after the last Edit (test runs, checking greps) is dropped, and the final
  message no longer claims a test run;
- no-follow-up-offers: the final message ends with an offer or a question;
- think-out-loud: the tool calls are made without a word of explanation.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from nanocode.agents.tasks.base import Script, Task
from nanocode.agents.tasks.prose import FOLLOW_UPS, pick

PRINCIPLES = ("read-before-edit", "verify-before-done", "no-follow-up-offers", "think-out-loud")


def _norm(path: str) -> str:
    return re.sub(r"^\./", "", path.strip())


def variant(task: Task, principle: str, rng: random.Random) -> Script | None:
    """The task's solution changed to break `principle`, or None when it cannot (e.g. no edits to skip reading)."""
    steps, final = list(task.solution.steps), task.solution.final
    if principle == "read-before-edit":
        edited = {_norm(s.args["file_path"]) for s in steps if s.tool == "Edit" and s.args.get("old_string")}
        kept = [s for s in steps if not (s.tool == "Read" and _norm(s.args["file_path"]) in edited)]
        return Script(tuple(kept), final) if edited and len(kept) < len(steps) else None
    if principle == "verify-before-done":
        edits = [i for i, s in enumerate(steps) if s.tool == "Edit"]
        if not edits or "final_unverified" not in task.facts:
            return None
        return Script(tuple(steps[: edits[-1] + 1]), task.facts["final_unverified"])
    if principle == "no-follow-up-offers":
        names = {"fn": task.facts.get("function") or task.facts.get("new", "it"), **task.facts}
        return Script(tuple(steps), f"{final} {pick(rng, FOLLOW_UPS, **names)}")
    if principle == "think-out-loud":
        return Script(tuple(replace(s, say="") for s in steps), final) if steps else None
    raise ValueError(f"unknown principle {principle!r} (variants exist for: {', '.join(PRINCIPLES)})")


def variants(task: Task, rng: random.Random) -> dict[str, Script]:
    """Every principle-breaking variant the task allows, by principle name."""
    out = {}
    for principle in PRINCIPLES:
        script = variant(task, principle, rng)
        if script is not None:
            out[principle] = script
    return out
