"""The command line's user errors: each is one line on stderr naming what to do, and a non-zero exit."""

import pytest

from nanocode.cli.main import main

EXPERIMENT = "experiments/debug_cpu.gin"


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["config", "plan", "tok-train", "pretrain", "sft", "eval", "report", "speedrun"])
def test_an_experiment_command_without_a_gin_file_says_so(capsys, command):
    assert "--gin_file" in one_line_error(capsys, [command])


def test_list_of_an_unknown_kind_names_the_kinds(capsys):
    err = one_line_error(capsys, ["list", "badkind"])
    assert "badkind" in err and "preference_objective" in err


def test_list_takes_the_experiment_and_its_plugins(capsys, gin_clean):
    """`list --gin_file` parses the experiment first, so what its `import` lines register is listed too."""
    assert main(["list", "preference_objective", "--gin_file", EXPERIMENT, "--plugin", "examples.ln_dpo"]) == 0
    out = capsys.readouterr().out
    assert "ipo" in out and "ln_dpo" in out


def test_data_takes_either_a_dataset_or_an_experiment(capsys, gin_clean):
    assert "either --dataset" in one_line_error(capsys, ["data"])
    assert "either --dataset" in one_line_error(
        capsys, ["data", "--dataset", "embedded_code", "--gin_file", EXPERIMENT]
    )
    err = one_line_error(capsys, ["data", "--gin_file", EXPERIMENT, "--shards", "3"])
    assert "--shards" in err and "gin file" in err


def test_data_prepares_the_experiments_sources(capsys, gin_clean):
    assert main(["data", "--gin_file", EXPERIMENT]) == 0
    out = capsys.readouterr().out
    assert "embedded_prose" in out or "web" in out, out
    assert out.count("val shards") == 2, out  # the debug mixture's two sources, web and code


def test_report_on_an_empty_workspace_warns(capsys, gin_clean):
    assert main(["report", "--gin_file", EXPERIMENT]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "holds no stage's metrics" in err


def test_onpolicy_takes_the_model_the_endpoint_serves(tmp_path):
    """`synth onpolicy` without --model asks the endpoint (GET /models) which model it serves."""
    import json

    from nanocode.cli.synth import served_model
    from nanocode.core.errors import ConfigError
    from tests.httpserver import FileServer

    (tmp_path / "one" / "v1").mkdir(parents=True)
    (tmp_path / "one" / "v1" / "models").write_text(json.dumps({"data": [{"id": "nanocode-debug-sft"}]}))
    (tmp_path / "two" / "v1").mkdir(parents=True)
    (tmp_path / "two" / "v1" / "models").write_text(json.dumps({"data": [{"id": "a"}, {"id": "b"}]}))
    with FileServer(tmp_path) as server:
        assert served_model(server.url("one/v1")) == "nanocode-debug-sft"
        with pytest.raises(ConfigError, match="serves 2 models"):
            served_model(server.url("two/v1"))
        with pytest.raises(ConfigError, match="pass --model"):
            served_model(server.url("missing/v1"))


def test_every_gin_file_the_commands_name_exists():
    """Examples in the commands' help (their docstrings) name real experiment files."""
    import re
    from pathlib import Path

    named = {
        (path.name, gin)
        for path in Path("nanocode/cli").glob("*.py")
        for gin in re.findall(r"experiments/[\w/]+\.gin", path.read_text(encoding="utf-8"))
    }
    assert named, "no command names an experiment file"
    missing = [f"{where}: {gin}" for where, gin in sorted(named) if not Path(gin).is_file()]
    assert not missing, missing
