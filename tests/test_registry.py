import gin
import pytest

import nanocode.registry as registry
from nanocode.core import config
from nanocode.core.errors import ConfigError
from nanocode.core.interfaces import PreferenceObjective


class _Objective(PreferenceObjective):
    """a test objective."""

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def __call__(self, batch):
        raise NotImplementedError


def test_register_get_and_duplicates():
    reg = registry.kind("preference_objective")
    with reg.temporary("test_obj", _Objective):
        assert registry.get("preference_objective", "test_obj") is _Objective
        with pytest.raises(registry.DuplicateNameError, match="already registered"):
            registry.register("preference_objective", "test_obj")(type("Other", (_Objective,), {}))
        other = type("Other", (_Objective,), {})
        registry.register("preference_objective", "test_obj", replace=True)(other)
        assert registry.get("preference_objective", "test_obj") is other
    assert "test_obj" not in reg


def test_unknown_name_suggests_close_match():
    with registry.kind("preference_objective").temporary("test_obj", _Objective):
        with pytest.raises(registry.UnknownNameError, match="did you mean 'test_obj'"):
            registry.get("preference_objective", "test_ob")
    with pytest.raises(registry.UnknownNameError, match="unknown component kind"):
        registry.kind("preference_objectives")


def test_interface_is_enforced():
    with pytest.raises(TypeError, match="does not subclass"):
        registry.register("preference_objective", "not_an_objective")(type("X", (), {}))


def test_gin_reaches_registered_class_without_wrapping_it(tmp_path, gin_clean):
    with registry.kind("preference_objective").temporary("test_obj", _Objective):
        f = tmp_path / "x.gin"
        f.write_text("test_obj.beta = 0.7\n")
        config.parse([str(f)])
        built = gin.get_configurable("nanocode.preference_objective.test_obj")()
        assert built.beta == 0.7
        assert _Objective().beta == 0.1  # the class itself is untouched: direct construction ignores gin
        sub = type("Sub", (_Objective,), {})
        assert sub().beta == 0.1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("test_obj.betta = 0.5\n", r"x\.gin:1: .*doesn't have a parameter named 'betta'"),
        ("import not_a_module_xyz\n", r"x\.gin:1: ModuleNotFoundError"),
        ("test_obj.beta = @nope()\n", r"x\.gin:1: .*No configurable matching reference '@nope\(\)'"),
        ("test_obj.beta = (\n", r"x\.gin: "),
    ],
)
def test_bad_gin_gives_one_line_naming_file_and_line(tmp_path, gin_clean, text, expected):
    with registry.kind("preference_objective").temporary("test_obj", _Objective):
        f = tmp_path / "x.gin"
        f.write_text(text)
        with pytest.raises(ConfigError, match=expected) as info:
            config.parse([str(f)])
        assert "\n" not in str(info.value)


def test_plugin_that_fails_to_import_is_one_line(gin_clean):
    with pytest.raises(ConfigError, match="plugin 'no_such_plugin_mod' failed to import"):
        config.parse([], [], ["no_such_plugin_mod"])
