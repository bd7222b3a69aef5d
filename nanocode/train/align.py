"""Preference optimisation: the SFT model trained on preference pairs (or labelled completions) with an objective
chosen by name in gin (`Alignment.objective = @ipo()`; a plugin's objective works the same way).

    nanocode align --gin_file experiments/<experiment>.gin [--resume [--force]]

The policy starts from the latest SFT checkpoint. The frozen reference is a second copy of those parameters, never
updated (no gradient reaches it); with `precompute_reference=True` it is instead used once, up front, to compute
every example's reference log-probs, which are stored with the examples (keyed by their rendered rows) and read
from the batch, so the reference's memory is free during training. Only what the objective declares is computed
(see `train.preference_step`). Each step logs the loss, rewards, margins and preference accuracy; every
`eval_every` steps the held-out preference loss/accuracy and the validation bits per byte on held-out SFT data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from nanocode.core import mesh as mesh_lib
from nanocode.core.checkpoint import fingerprint
from nanocode.core.errors import ConfigError, DataError
from nanocode.core.interfaces import PreferenceObjective
from nanocode.core.progress import Progress
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data.preference import Pair, PreferenceBatcher, Unpaired, render_row, to_unpaired
from nanocode.data.sft import ConversationMixture, SFTPacker
from nanocode.train.bpb import evaluate_bpb
from nanocode.train.finetune import FinetuneRun, Finetuning, first_system_prompt, restore_params, with_system_prompt
from nanocode.train.loop import say
from nanocode.train.preference_step import (
    PreferenceLoss,
    ReferenceTable,
    make_preference_eval,
    make_preference_step,
    make_reference_logps,
)

STAGE = "align"


@dataclass(frozen=True, kw_only=True)
class Alignment(Finetuning):
    """Preference-optimise the SFT model. `batch_size` counts pairs (paired objectives) or completions (KTO).

    num_steps = -1 trains `num_epochs` passes over the preference data.
    """

    objective: PreferenceObjective = field(repr=False)
    datasets: Sequence[Any] = field(repr=False)  # preference datasets (registered `preference_dataset` entries)
    sft_datasets: Sequence[Any] = field(default=(), repr=False)  # their held-out conversations give val bpb
    num_epochs: int = 1
    precompute_reference: bool = False
    init_from: str = "sft"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.objective, PreferenceObjective):
            raise ConfigError(
                f"Alignment.objective: expected a PreferenceObjective (e.g. @ipo()), got {type(self.objective).__name__}"
            )
        if not self.datasets:
            raise ConfigError("Alignment.datasets: no preference datasets")
        for d in self.datasets:
            if not callable(getattr(d, "items", None)):
                raise ConfigError(f"Alignment.datasets: {type(d).__name__} is not a preference dataset")
        for d in self.sft_datasets:
            if not callable(getattr(d, "conversations", None)):
                raise ConfigError(f"Alignment.sft_datasets: {type(d).__name__} is not a conversation dataset")
        if self.num_epochs < 1:
            raise ConfigError(f"Alignment.num_epochs = {self.num_epochs}: must be >= 1")
        if self.precompute_reference and self.objective.needs_mismatched_kl:
            raise ConfigError(
                f"Alignment.precompute_reference: {type(self.objective).__name__}'s mismatched-pair KL depends on "
                "each batch's composition, so its reference log-probs cannot be computed up front"
            )

    def make_run(self, workspace: Workspace, **options) -> AlignRun:
        return AlignRun(self, workspace, **options)


register_config(Alignment)


class WithReference:
    """Preference batches with their precomputed reference log-probs attached as "ref_logps"."""

    def __init__(self, batches: PreferenceBatcher, table: ReferenceTable):
        self.batches, self.table = batches, table

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self.batches:
            yield {**batch, "ref_logps": self.table.lookup(batch["tokens"], batch["mask"])}

    def state(self) -> dict:
        return self.batches.state()

    def restore(self, state: dict) -> None:
        self.batches.restore(state)


def _with_system(item: Pair | Unpaired, system_prompt: str | None) -> Pair | Unpaired:
    if isinstance(item, Pair):
        return Pair(with_system_prompt(item.chosen, system_prompt), with_system_prompt(item.rejected, system_prompt))
    return Unpaired(with_system_prompt(item.messages, system_prompt), item.desirable)


def _record(item: Pair | Unpaired) -> Any:
    return [item.chosen, item.rejected] if isinstance(item, Pair) else [item.messages, item.desirable]


class AlignRun(FinetuneRun):
    stage = STAGE

    def __init__(self, exp: Alignment, workspace: Workspace, **options):
        super().__init__(exp, workspace, **options)
        self.paired = bool(exp.objective.paired)
        self.rows_per_example = 2 if self.paired else 1

    # -- data -------------------------------------------------------------------------------------------------------
    def prepare_data(self):
        exp = self.exp
        for d in exp.datasets:
            d.prepare()
        train = [_with_system(x, exp.system_prompt) for d in exp.datasets for x in d.items("train")]
        test = [_with_system(x, exp.system_prompt) for d in exp.datasets for x in d.items("test")]
        self.sample_system = first_system_prompt([x.chosen if isinstance(x, Pair) else x.messages for x in train[:1]])
        if not self.paired:  # KTO on paired data: each pair gives a desirable and an undesirable completion
            train, test = to_unpaired(train), to_unpaired(test)
        pc, pi = jax.process_count(), jax.process_index()
        if exp.batch_size % pc or exp.micro_rows % pc:
            raise ConfigError(f"Alignment.batch_size and micro_batch_size must split over {pc} processes")
        self.local_train = train[pi::pc]
        self.local_test = test[pi::pc]
        if self.num_steps == -1:
            self.num_steps = exp.num_epochs * (len(train) // exp.batch_size)
            if self.num_steps == 0:
                raise DataError(f"preference data: {len(train)} examples, fewer than one batch of {exp.batch_size}")
        self.tokens_per_step = exp.batch_size * self.rows_per_example * exp.seq_len
        self.data_spec = fingerprint(
            {
                "examples": [len(train), len(test)],
                "first": json.dumps([_record(x) for x in train[:4]], sort_keys=True),
                "paired": self.paired,
                "batch_size": exp.batch_size,
                "seq_len": exp.seq_len,
                "processes": pc,
                "precompute_reference": exp.precompute_reference,
            }
        )
        self.batcher = PreferenceBatcher(
            self.local_train, self.codec, exp.batch_size // pc, exp.seq_len, paired=self.paired, seed=exp.seed
        )
        return self.batcher  # wrapped with the reference table in start() when precomputing

    # -- the step ---------------------------------------------------------------------------------------------------
    def build_step(self, init, tx):
        exp = self.exp
        sharding = mesh_lib.batch_sharding(self.mesh, self.rules)
        common = dict(
            groups=jax.process_count(),
            precomputed_reference=exp.precompute_reference,
            micro_sharding=sharding,
        )
        self.loss = PreferenceLoss(init.graphdef, exp.objective, accum_steps=exp.accum_steps, remat=exp.remat, **common)
        self.eval_loss = PreferenceLoss(init.graphdef, exp.objective, **common)
        self.eval_preference = make_preference_eval(self.eval_loss)
        needs_ref_params = exp.objective.needs_reference and not exp.precompute_reference
        return make_preference_step(
            self.loss,
            tx,
            state_shardings=init.shardings,
            ref_shardings=init.shardings.params if needs_ref_params else None,
            learning_rate=exp.learning_rate(self.num_steps),
        )

    def train(self, state, batch):
        return self.train_step(state, self.ref_params, batch)

    def start(self, state) -> None:
        exp = self.exp
        self.ref_params = None
        self.table: ReferenceTable | None = None
        if exp.objective.needs_reference:
            # a second copy of the SFT parameters, read again from its checkpoint (also when resuming)
            reference = restore_params(self.init_dir, self.init.state.params)
            if exp.precompute_reference:
                self.table = self.precompute(reference, state.rest)  # `reference` is dropped on return
            else:
                self.ref_params = reference
        pc, pi = jax.process_count(), jax.process_index()
        rows = exp.micro_rows // pc
        self.val_preference = []
        if len(self.local_test) >= rows:
            val = PreferenceBatcher(self.local_test, self.codec, rows, exp.seq_len, paired=self.paired, cycle=False)
            self.val_preference = [b for _, b in zip(range(exp.eval_batches), val)]
            if self.table is not None:
                self.val_preference = [
                    {**b, "ref_logps": self.table.lookup(b["tokens"], b["mask"])} for b in self.val_preference
                ]
        else:
            say(f"align: {len(self.local_test)} held-out preference examples, fewer than one eval batch of {rows}")
        self.val_bpb = []
        if exp.sft_datasets:
            conversations = ConversationMixture(exp.sft_datasets)
            conversations.prepare()
            test = [with_system_prompt(c, exp.system_prompt) for c in conversations.conversations("test")]
            packer = SFTPacker(test, self.codec, rows * self.rows_per_example, exp.seq_len, pi, pc, cycle=False)
            self.val_bpb = [b for _, b in zip(range(exp.eval_batches), packer)]

    def wrap_batches(self, batches):
        return WithReference(batches, self.table) if self.table is not None else batches

    def precompute(self, reference, rest) -> ReferenceTable:
        """The reference log-probs of every training and held-out row, in one forward pass over the data."""
        exp = self.exp
        rows = []
        for item in self.local_train + self.local_test:
            sides = [item.chosen, item.rejected] if isinstance(item, Pair) else [item.messages]
            rows += [render_row(self.codec, messages, exp.seq_len) for messages in sides]
        table = ReferenceTable()
        todo = [r for r in {ReferenceTable.key(*r): r for r in rows}.values()]  # each distinct row once
        chunk = exp.micro_rows * self.rows_per_example
        logps = make_reference_logps(self.init.graphdef)
        with Progress(len(todo), "align: reference log-probs", unit="row", enabled=self.progress and self.main) as bar:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                padded = part + [part[0]] * (chunk - len(part))  # a fixed shape: one compilation
                tokens = np.stack([t for t, _ in padded])
                mask = np.stack([m for _, m in padded])
                placed = mesh_lib.shard_batch({"tokens": tokens, "mask": mask}, self.mesh, self.rules)
                values = np.asarray(jax.device_get(logps(reference, rest, placed["tokens"], placed["mask"])))
                table.add(tokens[: len(part)], mask[: len(part)], values[: len(part)])
                bar.update(len(part))
        say(f"align: reference log-probs of {len(table)} rows precomputed; the reference parameters are released")
        return table

    # -- evals and samples -------------------------------------------------------------------------------------------
    def evaluate(self, step: int, state) -> dict:
        record: dict[str, Any] = {"step": step}
        if self.val_preference:
            pending = [
                self.eval_preference(state.params, state.rest, self.ref_params, self.shard(b))
                for b in self.val_preference
            ]
            n = sum(b["tokens"].shape[0] // self.rows_per_example for b in self.val_preference) * jax.process_count()
            loss = sum(float(total) for total, _ in pending)
            sums: dict[str, float] = {}
            for _, s in pending:
                for k, v in s.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            record["val_loss"] = loss / n
            record.update({f"val_{k}": v / n for k, v in sums.items()})
        if self.val_bpb:
            batches = (mesh_lib.shard_batch({"tokens": t, "mask": m}, self.mesh, self.rules) for t, m in self.val_bpb)
            record["val_bpb"] = evaluate_bpb(self.bpb_step, state.params, state.rest, batches)
        return self.log_eval(record)

    def postfix(self, record: dict) -> str:
        return f"loss {record['loss']:.4f} | acc {record.get('rewards/accuracy', float('nan')):.2f}"
