"""A miniature Hugging Face Hub and DCLM eval bundle on disk, at the real URL paths, for rehearsing the flagship
experiments offline: serve the directory with tests.httpserver.FileServer and point $HF_ENDPOINT at it.

    datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main/shard_0000{0,1,2}.parquet     prose (stdlib docs)
    datasets/smohammadi/the-stack-v2-python-shuffle/resolve/main/shard_0000{0,1}.parquet  code (stdlib sources)
    datasets/smohammadi/nanocode-tulu-selfoss-evol/resolve/main/all_{train,test}.jsonl      conversations
    datasets/smohammadi/nanocode-long-context/resolve/main/rollouts_{train,test}.jsonl
    datasets/smohammadi/nanocode-tulu-selfoss-evol-preference/resolve/main/all.pref_{train,test}.jsonl    pairs
    datasets/smohammadi/nanocode-long-context-preference/resolve/main/preference_rollouts_{train,test}.jsonl
    eval_bundle.zip                                                                        (S3's path)

Everything in nanocode's own layouts (parquet column `text`; {"messages": [...]} with tool calls; chosen/rejected).
`build_hub(root, revision=...)` puts the datasets under another revision than `main` (the flagship gin files pin one).
"""

from __future__ import annotations

import json
import pydoc_data.topics
from pathlib import Path

from nanocode.data.parquet import shard_name, write_shard
from tests.helpers import stdlib_texts

NAMES = ["hello", "utils", "main", "app", "core", "setup", "data", "model", "train", "cli", "io", "api"]


def hub_dir(root: Path, repo: str, revision: str = "main") -> Path:
    path = root / "datasets" / repo / "resolve" / revision
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_shards(directory: Path, docs: list[str], n: int) -> None:
    per = len(docs) // n
    for i in range(n):
        write_shard(directory / shard_name(i), docs[i * per : (i + 1) * per], row_group_size=64)


def conversation(i: int, long: bool = False) -> list[dict]:
    """A request, a tool call and its result, and the answer; `long` adds turns, as the long-context set has."""
    name = NAMES[i % len(NAMES)]
    messages = [
        {"role": "user", "content": f"can you look at {name}.py and tell me what it does? ({i})"},
        {
            "role": "assistant",
            "content": "let me read it.",
            "tool_call": {"name": "Read", "args": {"file_path": f"{name}.py"}},
        },
        {"role": "tool_result", "content": f"    1→def {name}():\n    2→    return {i}"},
        {"role": "assistant", "content": f"{name}.py defines {name}(), which returns {i}."},
    ]
    if long:
        messages += [
            {"role": "user", "content": f"make it return {i + 1}"},
            {
                "role": "assistant",
                "content": "editing.",
                "tool_call": {
                    "name": "Edit",
                    "args": {"file_path": f"{name}.py", "old_string": f"return {i}", "new_string": f"return {i + 1}"},
                },
            },
            {"role": "tool_result", "content": f"{name}.py\n    1→def {name}():\n    2→    return {i + 1}"},
            {"role": "assistant", "content": f"done: {name}() returns {i + 1} now."},
        ]
    return messages


def pair(i: int, long: bool = False) -> dict:
    chosen = conversation(i, long)
    rejected = [*chosen[:1], {"role": "assistant", "content": "I CANNOT HELP WITH THAT."}]
    return {"chosen": {"messages": chosen}, "rejected": {"messages": rejected}}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def build_hub(root: Path, revision: str = "main") -> Path:
    """Write the miniature Hub (and the eval bundle) under `root`, the datasets at `revision`; returns `root`."""
    from tests.test_eval_cmd import make_bundle  # a one-task-per-type CORE bundle in DCLM's layout, zipped

    prose = [t for t in pydoc_data.topics.topics.values() if len(t) > 200]
    write_shards(hub_dir(root, "karpathy/fineweb-edu-100b-shuffle", revision), prose[: 3 * (len(prose) // 3)], 3)
    write_shards(hub_dir(root, "smohammadi/the-stack-v2-python-shuffle", revision), stdlib_texts(1_500_000), 2)
    sets = {
        "smohammadi/nanocode-tulu-selfoss-evol": ("all_{}.jsonl", False, conversation),
        "smohammadi/nanocode-long-context": ("rollouts_{}.jsonl", True, conversation),
        "smohammadi/nanocode-tulu-selfoss-evol-preference": ("all.pref_{}.jsonl", False, pair),
        "smohammadi/nanocode-long-context-preference": ("preference_rollouts_{}.jsonl", True, pair),
    }
    for repo, (pattern, long, make) in sets.items():
        directory = hub_dir(root, repo, revision)
        records = [make(i, long) for i in range(48)]
        records = [r if "chosen" in r else {"messages": r} for r in records]
        write_jsonl(directory / pattern.format("train"), records[:40])
        write_jsonl(directory / pattern.format("test"), records[40:])
    make_bundle(root)
    return root
