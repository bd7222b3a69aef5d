"""Agentic SFT: the pretrained model fine-tuned on tool-call conversations, loss on what the assistant produces.

    nanocode sft --gin_file experiments/<experiment>.gin [--resume [--force]]

`SFTTraining` is the experiment. The data is a mixture of registered conversation datasets (each with a number of
epochs; shuffled together, or one after another with `in_order`), packed whole into rows with a loss mask
(assistant text, tool calls, <|assistant_end|>); the step is the pretraining step with that mask, so the loss is
the exact per-token mean over every valid target of the batch.
Every `eval_every` steps: validation bits per byte of the held-out conversations (assistant tokens only) and the
tool-call validity rate — the share of greedy replies to held-out prompts that contain a well-formed call of a
known tool with its required arguments. Samples, checkpoints, resume, metrics and the progress bar are the loop's
that every stage shares (`train.loop`). The run starts from the latest pretraining checkpoint's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax

from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import fingerprint
from nanocode.core.errors import ConfigError, DataError
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import Message
from nanocode.data.sft import ConversationMixture, SFTPacker
from nanocode.train.bpb import evaluate_bpb
from nanocode.train.finetune import (
    FinetuneRun,
    Finetuning,
    first_system_prompt,
    greedy_replies,
    has_valid_tool_call,
    names_requested_file,
    tool_schemas,
    with_system_prompt,
)
from nanocode.train.loop import say

STAGE = "sft"


@dataclass(frozen=True, kw_only=True)
class SFTTraining(Finetuning):
    """Fine-tune the pretrained model on conversation datasets (`batch_size` packed rows of sequence_len tokens).

    num_steps = -1 trains one pass over the mixture (every dataset repeated its number of epochs).
    """

    datasets: Sequence[Any] = field(repr=False)  # conversation datasets (registered `sft_dataset` entries)
    epochs: Sequence[int] | None = None  # per dataset; None: one each
    # True: a curriculum, the datasets one after another in the order listed (each shuffled within itself), e.g. the
    # whole mix, then locate tasks alone; with num_steps = -1 the run ends where the last dataset does.
    in_order: bool = False
    tool_eval_prompts: int = 16  # held-out prompts whose greedy reply is checked for a valid tool call
    init_from: str = "pretrain"

    def __post_init__(self):
        super().__post_init__()
        if not self.datasets:
            raise ConfigError("SFTTraining.datasets: no conversation datasets")
        for d in self.datasets:
            if not callable(getattr(d, "conversations", None)):
                raise ConfigError(f"SFTTraining.datasets: {type(d).__name__} is not a conversation dataset")
        if self.epochs is not None and (len(self.epochs) != len(self.datasets) or min(self.epochs) < 1):
            raise ConfigError(
                f"SFTTraining.epochs = {list(self.epochs)}: one count >= 1 per dataset ({len(self.datasets)})"
            )
        if self.tool_eval_prompts < 0:
            raise ConfigError(f"SFTTraining.tool_eval_prompts = {self.tool_eval_prompts}: must be >= 0")

    def make_run(self, workspace: Workspace, **options) -> SFTRun:
        return SFTRun(self, workspace, **options)


register_config(SFTTraining)


def tool_prompts(conversations: Sequence[list[Message]], limit: int) -> list[list[Message]]:
    """Held-out prompts for the tool-call check: each conversation up to its first assistant turn, preferring those
    whose reference reply calls a tool (all of them when none does)."""
    calls, others = [], []
    for messages in conversations:
        k = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), None)
        if k is None:
            continue
        (calls if messages[k].get("tool_call") else others).append(list(messages[:k]))
    return (calls or others)[:limit]


class SFTRun(FinetuneRun):
    stage = STAGE

    def prepare_data(self) -> SFTPacker:
        exp, codec = self.exp, self.codec
        mixture = ConversationMixture(exp.datasets, exp.epochs, seed=exp.seed, in_order=exp.in_order)
        mixture.prepare()
        train = [with_system_prompt(c, exp.system_prompt) for c in mixture.conversations("train")]
        self.test = [with_system_prompt(c, exp.system_prompt) for c in mixture.conversations("test")]
        self.sample_system = first_system_prompt(train)
        pc, pi = _processes()
        if exp.batch_size % pc:
            raise ConfigError(f"SFTTraining.batch_size = {exp.batch_size} does not split over {pc} processes")
        rows = exp.batch_size // pc
        if self.num_steps == -1:  # one pass: the full batches that packing the whole mixture makes
            self.num_steps = sum(1 for _ in SFTPacker(train, codec, exp.batch_size, exp.seq_len, cycle=False))
            if self.num_steps == 0:
                raise DataError(
                    f"SFT data: {len(train)} conversations do not fill one batch of {exp.batch_size} rows of "
                    f"{exp.seq_len + 1} tokens (set SFTTraining.num_steps to cycle over them)"
                )
        self.tokens_per_step = exp.batch_size * exp.seq_len
        self.data_spec = fingerprint(
            {
                "datasets": [getattr(d, "name", type(d).__name__) for d in exp.datasets],
                "epochs": list(exp.epochs or []),
                "in_order": exp.in_order,
                "conversations": [len(train), len(self.test)],
                "first": train[:4],
                "rows": rows,
                "seq_len": exp.seq_len,
                "processes": pc,
            }
        )
        return SFTPacker(train, codec, rows, exp.seq_len, process_index=pi, process_count=pc)

    def start(self, state) -> None:
        exp = self.exp
        pc, pi = _processes()
        val = SFTPacker(self.test, self.codec, exp.micro_rows // pc, exp.seq_len, pi, pc, cycle=False)
        self.val_batches = [batch for _, batch in zip(range(exp.eval_batches), val)]  # the same at every eval
        if not self.val_batches:
            say(f"sft: the {len(self.test)} held-out conversations fill no eval batch: no validation bpb")
        fitting = [  # prompts too long to leave room for a reply are left out
            (self.codec.render_prompt(p), p[-1].get("content") or "")
            for p in tool_prompts(self.test, exp.tool_eval_prompts)
        ]
        fitting = [(ids, request) for ids, request in fitting if len(ids) + exp.sample_tokens <= exp.seq_len]
        self.tool_prompts, self.tool_requests = [ids for ids, _ in fitting], [r for _, r in fitting]
        self.schemas = tool_schemas()

    def shard(self, batch):
        tokens, mask = batch
        return mesh_lib.shard_batch({"tokens": tokens, "mask": mask}, self.mesh, self.rules)

    def evaluate(self, step: int, state) -> dict:
        record: dict[str, Any] = {"step": step}
        if self.val_batches:
            record["val_bpb"] = evaluate_bpb(self.bpb_step, state.params, state.rest, map(self.shard, self.val_batches))
        if self.tool_prompts and self.exp.sample_tokens:
            replies = greedy_replies(
                self.greedy,
                state.params,
                state.rest,
                self.tool_prompts,
                self.exp.sample_tokens,
                stop_id=self.codec.ids["assistant_end"],
                rows_multiple=self.shards,
            )
            valid = sum(has_valid_tool_call(self.codec, r, self.schemas) for r in replies)
            record["tool_call_valid"] = valid / len(replies)
            record["tool_call_prompts"] = len(replies)
            named = [names_requested_file(self.codec, q, r) for q, r in zip(self.tool_requests, replies)]
            named = [n for n in named if n is not None]
            if named:  # the share of replies that name the file the request names: conditioning on the request
                record["names_file"] = sum(named) / len(named)
        return self.log_eval(record)


def _processes() -> tuple[int, int]:
    return jax.process_count(), jax.process_index()
