"""A Policy backed by a trained model: the next assistant turn generated over the KV-cache engine.

One `AgentSession` (a ChatSession: the cache is kept between the steps of an episode, so each step feeds only the
new tool result) lives as long as the policy. `act(messages)` brings the session up to date with the episode's
messages (normally just the tool_result appended since the last step; anything else, e.g. a new episode or a
conversation that diverged, rebuilds it from the messages) and generates one turn. The reply comes back as
nanocode's message: text, plus `tool_call` or, for a call the model got wrong, `tool_call_error` (the harness
decides what to do with that; nothing here raises on bad model output).

When even the context rule (agent_session.py) cannot make room, the policy answers an empty message, which ends the
episode's turn, and counts it in `stats["context_full"]`.

    policy = ModelPolicy(Engine(loaded.model), ConversationCodec(loaded.tokenizer))
    AgenticEval(n_tasks=28).run(policy).metrics()
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from nanocode.agents.agent_session import AgentSession
from nanocode.agents.policy import Policy
from nanocode.data.conversation import ConversationCodec, Message
from nanocode.models.engine import ContextFull, Engine
from nanocode.models.sampling import GREEDY, SamplingParams


def message_key(message: Message) -> str:
    """What identifies a message for the session's purposes (role, text, call), whatever its dict's key order."""
    call = message.get("tool_call")
    return json.dumps(
        [
            message.get("role"),
            message.get("content") or "",
            [call.get("name"), call.get("args")] if isinstance(call, dict) else None,
            message.get("tool_call_error"),
        ],
        sort_keys=True,
        default=str,
    )


class ModelPolicy(Policy):
    """The model's own next turn; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        codec: ConversationCodec,
        *,
        sampling: SamplingParams = GREEDY,
        max_new_tokens: int = 256,
        name: str = "model",
    ):
        self.name = name
        self.session = AgentSession(engine, codec, sampling=sampling, max_new_tokens=max_new_tokens)
        self._seen: list[str] = []  # message_key of each episode message the session holds (system excluded)
        # replies, tool_calls, malformed_calls, context_full, length (a reply cut by its token budget), rebuilds
        self.stats: Counter[str] = Counter()

    def start(self, task_id: str) -> None:
        self.session.clear()
        self._seen = []

    def act(self, messages: Sequence[Message]) -> Message:
        self._sync(messages)
        try:
            reply = self.session.reply()
        except ContextFull:
            self.stats["context_full"] += 1
            return {"role": "assistant", "content": ""}
        message = dict(reply.message)
        self._seen.append(message_key(message))
        self.stats["replies"] += 1
        self.stats["tool_calls"] += "tool_call" in message
        self.stats["malformed_calls"] += "tool_call_error" in message
        self.stats["length"] += reply.finish_reason == "length"
        return message

    def _sync(self, messages: Sequence[Message]) -> None:
        """Make the session hold `messages` (the system prompt as its system), feeding only what is new."""
        messages = list(messages)
        system = messages[0].get("content") if messages and messages[0].get("role") == "system" else None
        body = messages[1:] if system is not None else messages
        keys = [message_key(m) for m in body]
        if system != self.session.system or keys[: len(self._seen)] != self._seen:
            if self._seen:
                self.stats["rebuilds"] += 1
            self.session.clear()
            self.session.system = system
            self._seen = []
        for message, key in zip(body[len(self._seen) :], keys[len(self._seen) :]):
            self.session.add(message)
            self._seen.append(key)
