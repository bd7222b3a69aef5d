"""docs/extending.md shows the examples the tests import, verbatim, and the README links it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_extending_guide_shows_each_example_file_in_full():
    guide = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    examples = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in (".py", ".gin") and p.stem != "__init__")
    assert {p.name for p in examples} == {"ln_dpo.py", "curriculum.py", "curriculum.gin", "swiglu.py"}
    for path in examples:
        assert path.read_text(encoding="utf-8") in guide, f"docs/extending.md does not show {path.name} as it is"
    assert "docs/extending.md" in (ROOT / "README.md").read_text(encoding="utf-8")
