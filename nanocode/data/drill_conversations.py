"""Copy drills as conversations: a replay of pretraining's drills during SFT, so fine-tuning keeps words copyable.

Fine-tuning on agentic conversations trains the model to write only the words those conversations contain. A word
no reply ever writes (a held-out function's first word, ` sorted` or ` median`) then falls in probability until the
model no longer copies it from a request into a tool call, though the pretrained model could. These conversations
give every frequent identifier a place in the replies again: the user lists words of the standard library (the
pretraining drills' words, nanocode.data.copy_drills) in one surface form, and the assistant writes them back in
another, so the copy crosses token boundaries as a request's `name` does on its way into `def name\\(`.
"""

from __future__ import annotations

import random

from nanocode.core.errors import DataError
from nanocode.core.kinds import SFT_DATASETS
from nanocode.data.conversation import Message
from nanocode.data.copy_drills import FORMS, vocabulary
from nanocode.data.embedded import stdlib_root
from nanocode.data.sft import ConversationDataset

# What the user calls the words in each form ("write these file names as definitions: a.py b.py").
FORM_NAMES = {
    "plain": "words",
    "backticks": "`names`",
    "quoted": "strings",
    "paths": "file names",
    "calls": "definitions",
}


@SFT_DATASETS.register("copy_drill_conversations")
class CopyDrillConversations(ConversationDataset):
    """`count` training conversations (and `test_count` for the test split) of `words` identifiers each, drawn
    from the `vocab_size` most frequent of the first `vocab_files` standard-library sources; deterministic for a
    seed."""

    name = "copy_drill_conversations"

    def __init__(
        self,
        count: int = 4096,
        test_count: int = 64,
        words: tuple[int, int] = (4, 16),
        vocab_files: int = 200,
        vocab_size: int | None = 2000,
        seed: int = 0,
    ):
        if count < 1 or test_count < 0 or not 1 <= words[0] <= words[1]:
            raise DataError(
                f"{self.name}: need count >= 1, test_count >= 0 and words a range within [1, ...), got "
                f"count={count}, test_count={test_count}, words={words}"
            )
        self.count, self.test_count, self.words = count, test_count, tuple(words)
        self.vocab_files, self.vocab_size, self.seed = vocab_files, vocab_size, seed
        # The name goes into SFT's data fingerprint: a resume refuses a set drawn with other parameters.
        self.name = (
            f"copy_drill_conversations-s{seed}-n{count}-t{test_count}-w{words[0]}-{words[1]}"
            f"-f{vocab_files}-v{vocab_size or 'all'}"
        )

    def conversations(self, split: str) -> list[list[Message]]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        vocab = vocabulary(stdlib_root(), self.vocab_files, self.vocab_size)
        if not vocab:
            raise DataError(f"{stdlib_root()}: no Python sources to draw the drill conversations' words from")
        rng = random.Random(f"{self.seed}:{split}")  # str seeds hash with sha512: the same set on every machine
        return [self._conversation(rng, vocab) for _ in range(self.count if split == "train" else self.test_count)]

    def _conversation(self, rng: random.Random, vocab: tuple[str, ...]) -> list[Message]:
        words = [rng.choice(vocab) for _ in range(rng.randint(*self.words))]
        given, wanted = rng.sample(sorted(FORMS), 2)
        request = f"write these {FORM_NAMES[given]} as {FORM_NAMES[wanted]}: {FORMS[given](words)}"
        return [{"role": "user", "content": request}, {"role": "assistant", "content": FORMS[wanted](words)}]
