"""Does the SFT model condition on the request? One greedy turn on held-out repo-task requests (fix a bug, implement a
stub): how often does the first reply's tool call (or text) name the file the request names?

    NANOCODE_BASE_DIR=<a workspace with a trained debug run> \
        .venv/bin/python benchmarks/sft_conditioning.py --stage sft --step 80 --tasks 48

Prints the counts; results and their commands are kept in benchmarks/sft_conditioning_results.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import re

from common import add_checkpoint_args, load_checkpoint

from nanocode.agents.model_policy import ModelPolicy
from nanocode.agents.tasks import RepoTasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_checkpoint_args(parser)
    parser.add_argument("--tasks", type=int, default=48)
    args = parser.parse_args()

    experiment, loaded, engine, codec = load_checkpoint(args)
    tasks = RepoTasks(seed=1, templates="heldout", kinds=["fix_bug", "implement"])
    named, hits, first_tools = 0, 0, collections.Counter()
    for i in range(args.tasks):
        task = tasks.task(i)
        files = [f.split("/")[-1] for f in re.findall(r"[\w/]+\.py", task.request)]
        policy = ModelPolicy(engine, codec, max_new_tokens=96)
        system = {"role": "system", "content": experiment.system_prompt}
        reply = policy.act([system, {"role": "user", "content": task.request}])
        call = reply.get("tool_call") or {}
        first_tools[call.get("name")] += 1
        said = json.dumps(call.get("args") or {}) + (reply.get("content") or "")
        if files:
            named += 1
            hits += any(f in said for f in files)
    print(
        f"{args.stage} step {loaded.step}: first reply names the request's file in {hits}/{named}; tools {dict(first_tools)}"
    )


if __name__ == "__main__":
    main()
