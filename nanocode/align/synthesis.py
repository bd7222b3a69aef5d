"""The `synth` stage as a gin experiment: which teacher, which constitution, how many scenarios, where to write."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nanocode.align.scenarios import SCENARIO_SCHEMA, scenario_request, scenario_seeds
from nanocode.align.synth import JsonlStore, SynthPipeline, synthesize
from nanocode.align.teacher import Teacher, TeacherError
from nanocode.core.errors import DataError
from nanocode.core.interfaces import Constitution
from nanocode.core.io import write_text
from nanocode.core.registry import register_config
from nanocode.core.workspace import Workspace
from nanocode.data.conversation import ConversationCodec
from nanocode.data.sft import read_jsonl
from nanocode.data.tokenizer import BPETokenizer


@dataclass(kw_only=True)
class Synthesis:
    """Scenarios -> rollouts -> critique -> revision -> preference pairs, written under <tag>/synth/."""

    teacher: Teacher
    constitution: Constitution
    seeds: int = 5
    scenarios_per_seed: int = 20
    seed: int = 0
    max_attempts: int = 4
    min_score: int = 9
    critique: bool = True
    workers: int = 4
    max_tokens: int = 4096
    gold_rollouts: str | None = None  # JSONL of hand-checked rollouts used as few-shot examples

    def out_dir(self, workspace: Workspace) -> Path:
        return workspace.run_dir("synth")

    def pipeline(self, workspace: Workspace) -> SynthPipeline:
        codec = None
        if (workspace.tokenizer_dir / "tokenizer.json").exists():  # length check against the real tokenizer
            codec = ConversationCodec(BPETokenizer.load(workspace.tokenizer_dir))
        gold = read_jsonl(self.gold_rollouts) if self.gold_rollouts else ()
        return SynthPipeline(
            self.teacher,
            self.constitution,
            codec=codec,
            max_tokens=self.max_tokens,
            max_attempts=self.max_attempts,
            min_score=self.min_score,
            critique=self.critique,
            gold_rollouts=gold,
        )

    def scenarios(self, workspace: Workspace, progress: bool = True) -> list[dict]:
        """Ask the teacher for user requests, seed by seed. Resumable: a seed is done once its line is in
        scenario_seeds.jsonl (written after all its scenarios); scenarios of a seed cut off halfway are dropped
        and the seed asked again, so nothing is duplicated or lost."""
        store = JsonlStore(self.out_dir(workspace))
        have = store.read("scenarios.jsonl")
        if not (store.dir / "scenario_seeds.jsonl").exists():  # made before any scenario is written, so ...
            for seed_id in dict.fromkeys(s["seed_id"] for s in have):  # ... these come from before seeds were marked
                store.append("scenario_seeds.jsonl", {"id": seed_id})
            (store.dir / "scenario_seeds.jsonl").touch()
        done = {r["id"] for r in store.read("scenario_seeds.jsonl")}
        if any(s["seed_id"] not in done for s in have):
            have = [s for s in have if s["seed_id"] in done]
            write_text(store.dir / "scenarios.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in have))
        failed = 0
        for s in scenario_seeds(self.seeds, self.seed):
            if s.id in done:
                continue
            try:
                reply = self.teacher.complete_json(
                    scenario_request(s, self.scenarios_per_seed), SCENARIO_SCHEMA, temperature=0.8
                )
            except TeacherError:
                failed += 1
                continue
            for j, sc in enumerate(reply.get("scenarios", [])):
                if isinstance(sc, dict) and str(sc.get("prompt", "")).strip():
                    record = {
                        "id": f"{s.id}-{j:03d}",
                        "seed_id": s.id,
                        "prompt": str(sc["prompt"]),
                        "notes": s.modifier,
                    }
                    store.append("scenarios.jsonl", record)
                    have.append(record)
            store.append("scenario_seeds.jsonl", {"id": s.id})
        if failed:
            print(f"synth: {failed} scenario seed(s) failed at the teacher; re-run to retry them")
        return have

    def rollouts(self, workspace: Workspace, scenarios_file: str | None = None, progress: bool = True) -> dict:
        path = Path(scenarios_file) if scenarios_file else self.out_dir(workspace) / "scenarios.jsonl"
        if not path.exists():
            raise DataError(f"{path}: no scenarios (run `nanocode synth scenarios` first, or pass --input)")
        scenarios = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for s in scenarios:
            if s.get("notes"):  # the complexity modifier rides along with the request, as nanocode's generator
                s["prompt"] = f"{s['prompt']} (complexity: {s['notes']})"
        return synthesize(
            self.pipeline(workspace), scenarios, self.out_dir(workspace), workers=self.workers, progress=progress
        )

    def restyle(self, workspace: Workspace, conversations_file: str, progress: bool = True) -> dict:
        """Existing SFT conversations -> pairs: chosen = restyled to the SOUL, rejected = the original."""
        pipeline = self.pipeline(workspace)
        store = JsonlStore(self.out_dir(workspace))
        done = {r["id"] for r in store.read("restyle_pairs.jsonl")}
        counts = {"pairs": 0, "rejected_restyle": 0, "teacher_failed": 0, "skipped_done": 0}
        for i, messages in enumerate(read_jsonl(conversations_file)):
            rid = f"{Path(conversations_file).stem}-{i}"
            if rid in done:
                counts["skipped_done"] += 1
                continue
            try:
                restyled, original = pipeline.restyle_one(messages)
            except TeacherError:
                counts["teacher_failed"] += 1
                continue
            if not restyled.passed(self.min_score):
                counts["rejected_restyle"] += 1
                continue
            store.append(
                "restyle_pairs.jsonl",
                {
                    "id": rid,
                    "chosen": {"messages": restyled.messages},
                    "rejected": {"messages": original.messages},
                    "rejected_fails": original.failed_principles(),
                },
            )
            counts["pairs"] += 1
        return counts


register_config(Synthesis)
