"""Agent episodes of a trained checkpoint on repo tasks of chosen kinds: how many succeed, how each ended, and the
first episodes' messages (what the model actually called). Greedy by default; with `--temperature T --samples K`
each task gets K sampled episodes and the task counts as solved when any succeeds (pass@K: whether RL from that
checkpoint would see a reward at all).

    NANOCODE_BASE_DIR=<a workspace with a trained run> .venv/bin/python benchmarks/task_episodes.py \
        --gin_file experiments/debug_copy_d6.gin --stage sft --templates heldout --kinds locate --tasks 12

Prints the counts; results and their commands are kept in benchmarks/sft_conditioning_results.md.
"""

from __future__ import annotations

import argparse
import collections
import json

from common import add_checkpoint_args, load_checkpoint

from nanocode.agents.model_policy import ModelPolicy
from nanocode.agents.rollouts import run_episode
from nanocode.agents.tasks import RepoTasks
from nanocode.models.sampling import SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_checkpoint_args(parser)
    parser.add_argument("--templates", default="heldout", choices=["train", "heldout"])
    parser.add_argument("--kinds", default="locate", help="comma-separated task kinds")
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max_steps", type=int, default=4, help="model replies per episode (the debug eval's)")
    parser.add_argument("--max_tokens", type=int, default=96, help="tokens per reply (the debug eval's)")
    parser.add_argument("--show", type=int, default=2, help="print the messages of this many episodes")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--samples", type=int, default=1, help="episodes per task (sampled; seeds 0..K-1)")
    args = parser.parse_args()

    experiment, _, engine, codec = load_checkpoint(args)
    tasks = RepoTasks(seed=args.seed, templates=args.templates, kinds=args.kinds.split(",")).tasks(args.tasks)
    solved, wins, endings, shown = 0, 0, collections.Counter(), 0
    for i, task in enumerate(tasks):
        passed = []
        for k in range(args.samples):
            sampling = SamplingParams(temperature=args.temperature, seed=1000 * i + k)
            policy = ModelPolicy(engine, codec, sampling=sampling, max_new_tokens=args.max_tokens)
            episode = run_episode(task, policy, max_steps=args.max_steps, system=experiment.system_prompt)
            passed.append(episode.check.passed)
            endings[episode.stop_reason] += 1
            if shown < args.show and (episode.check.passed or k == 0):
                shown += 1
                print(f"    {task.template} sample {k}: {'ok' if episode.check.passed else '--'}")
                for message in episode.messages[1:]:
                    print("     ", json.dumps(message)[:300])
        wins, solved = wins + sum(passed), solved + any(passed)
        print(f"{i:3d} {task.template:24s} {sum(passed)}/{args.samples} ok", flush=True)
    episodes = len(tasks) * args.samples
    print(
        f"{args.stage} {args.templates} {args.kinds} (temperature {args.temperature}, {args.samples} per task): "
        f"{solved}/{len(tasks)} tasks solved, {wins}/{episodes} episodes succeed; endings {dict(endings)}"
    )


if __name__ == "__main__":
    main()
