"""A real third-party agent from the registry against `nanocode serve`: mini-swe-agent (litellm underneath, OpenAI
chat completions with one `bash` tool) works a throwaway git repo non-interactively for three steps.

The served model is a debug-size GPT whose weights make it call `bash` with `pwd` every turn (tests/test_chat.py's
scripted_model), so each step is a real tool call that the agent parses, executes and answers with a tool message.
Any protocol error (an HTTP error, a response litellm cannot read, a call to a tool the agent does not know) ends
the agent with an exception and fails the test. The agent runs in its own process, as a user runs it; this file is
also its driver (`python tests/test_third_party_agents.py URL REPO OUT`).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AGENT_ENV = {
    "MSWEA_SILENT_STARTUP": "1",
    "MSWEA_CONFIGURED": "true",  # no first-run setup prompt
    "MSWEA_COST_TRACKING": "ignore_errors",  # a local model has no price
    "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT": "1",  # a protocol error fails at once instead of backing off
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # offline: litellm's bundled model map, no download
}
MODEL = "nanocode-debug"


@pytest.mark.slow
def test_mini_swe_agent_works_three_steps_with_no_protocol_error(tmp_path):
    # found, not imported: importing it here would create its config dir and load its .env into this process
    if importlib.util.find_spec("minisweagent") is None:
        pytest.skip("mini-swe-agent is not installed (it is in the dev extras)")
    from nanocode.agents.server import CompletionServer
    from nanocode.data.conversation import ConversationCodec
    from nanocode.models.engine import Engine
    from nanocode.models.gpt import GPTConfig
    from tests.helpers import small_tokenizer
    from tests.test_chat import scripted_model

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "hello.py").write_text("print('hello')\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for argv in (["git", "init", "-q"], ["git", "add", "."], [*git, "commit", "-qm", "init"]):
        subprocess.run(argv, cwd=repo, check=True)
    codec = ConversationCodec(small_tokenizer())
    chain = [codec.ids["assistant_start"], *codec.tok.encode("ok")]
    chain += codec.render_tool_call({"name": "bash", "args": {"command": "pwd"}})
    config = GPTConfig(sequence_len=2048, vocab_size=512, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    engine = Engine(scripted_model(chain, config), min_bucket=64, max_bucket=512)
    out = tmp_path / "run.json"
    env = {**os.environ, **AGENT_ENV, "MSWEA_GLOBAL_CONFIG_DIR": str(tmp_path / "config")}
    with CompletionServer(engine, codec, model_name=MODEL, port=0, api_key="local-key") as server:
        argv = [sys.executable, __file__, server.url + "/v1", str(repo), str(out)]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    run = json.loads(out.read_text())
    assert run["exit_status"] == "LimitsExceeded" and run["model_calls"] == 3  # three steps, then the step limit
    assert run["commands"] == ["pwd"] * 3
    assert [str(repo) in text for text in run["observations"]] == [True] * 3  # each call ran, in the repo
    assert run["format_errors"] == 0


def run_mini_swe_agent(url: str, repo: str, out: str) -> None:
    """mini-swe-agent's own default agent, model and local environment, with its shipped `mini.yaml` config."""
    import yaml
    from minisweagent.agents.default import DefaultAgent
    from minisweagent.config import builtin_config_dir
    from minisweagent.environments.local import LocalEnvironment
    from minisweagent.models.litellm_model import LitellmModel

    config = yaml.safe_load((builtin_config_dir / "mini.yaml").read_text())
    templates = {k: config["model"][k] for k in ("observation_template", "format_error_template")}
    model = LitellmModel(
        model_name=f"openai/{MODEL}",
        model_kwargs={"api_base": url, "api_key": "local-key", "max_tokens": 64, "temperature": 0.0},
        **templates,
    )
    # mini.yaml's own system prompt; its long task template (~2,000 tokens of our debug tokenizer) shortened to the
    # task itself, so the debug model's prefill stays cheap
    system = config["agent"]["system_template"]
    agent = DefaultAgent(
        model, LocalEnvironment(cwd=repo, timeout=10), system_template=system, instance_template="{{task}}",
        step_limit=3, cost_limit=0,
    )  # fmt: skip
    result = agent.run("Print the contents of hello.py")
    actions = [a for m in agent.messages for a in (m.get("extra") or {}).get("actions", [])]
    record = {
        "exit_status": result.get("exit_status"),
        "model_calls": agent.n_calls,
        "commands": [a["command"] for a in actions],
        "observations": [str(m.get("content")) for m in agent.messages if m.get("role") == "tool"],
        "format_errors": sum((m.get("extra") or {}).get("interrupt_type") == "FormatError" for m in agent.messages),
    }
    Path(out).write_text(json.dumps(record))


if __name__ == "__main__":
    run_mini_swe_agent(*sys.argv[1:4])
