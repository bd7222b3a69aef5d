"""`nanocode serve` as a user runs it: a separate process over a saved checkpoint, an api key from the environment,
the openai client, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import threading

import openai
import pytest

from nanocode.core.workspace import Workspace
from tests.test_chat_cli import make_run


@pytest.mark.slow
def test_serve_command_answers_the_openai_client_and_stops_on_ctrl_c(tmp_path, gin_clean, workspace_base):
    gin_file, _ = make_run(tmp_path)
    env = {**os.environ, "NANOCODE_BASE_DIR": str(workspace_base), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    env["NANOCODE_API_KEY"] = "cli-key"
    env["PYTHONFAULTHANDLER"] = "1"  # a hung exit is told by SIGABRT: every thread's stack on stderr
    argv = [
        sys.executable,
        "-m",
        "nanocode.cli.main",
        "serve",
        "--gin_file",
        gin_file,
        "--port",
        "0",
        "--max_tokens",
        "6",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    errors: list[str] = []  # stderr drained as it comes: a full pipe would block the server on a write
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=240)
        assert lines and " on http://" in lines[0], "".join(errors) if proc.poll() is not None else lines
        url = lines[0].strip().rsplit(" on ", 1)[1]
        assert lines[0].startswith("nanocode serve: nanocode-cli-sft from ")
        assert str(Workspace("cli").checkpoint_dir("sft")) in lines[0]
        assert url.startswith("http://127.0.0.1:")  # loopback unless --host says otherwise
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0, timeout=120).models.list()
        client = openai.OpenAI(base_url=url, api_key="cli-key", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == ["nanocode-cli-sft"]
        out = client.chat.completions.create(
            model="nanocode-cli-sft", messages=[{"role": "user", "content": "hi"}], temperature=0
        )
        assert out.usage.completion_tokens <= 6 and out.choices[0].finish_reason in ("stop", "length", "tool_calls")
        stream = client.chat.completions.create(
            model="nanocode-cli-sft", messages=[{"role": "user", "content": "hi"}], temperature=0, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == (out.choices[0].message.content or "")  # streamed and plain agree (greedy)
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=240) == 0  # generous: on an overloaded machine the worker's join alone takes 30 s
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler writes where each thread is stuck
            proc.wait(timeout=30)
            pytest.fail("serve did not exit on Ctrl-C; its stderr:\n" + "".join(errors)[-6000:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.dumps(out.model_dump())  # a well-formed response object
