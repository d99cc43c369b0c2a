"""The repository keeps its promises to a new user: README's commands are the ones CI runs."""

import ast
import re

import pytest

from tests.conftest import REPO, require, require_module


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "README.md must open with a bash block of commands"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    train, test = readme_commands()
    assert "python -m src.cli fit -c configs/quickstart.yaml" in train
    assert "pytest" in test
    # Both run in the virtualenv setup.sh makes, whatever python3 is (Debian's refuses pip: PEP 668).
    assert train.startswith("bash scripts/setup.sh && .venv/bin/python ")
    assert test.startswith("bash scripts/setup.sh --dev && .venv/bin/python ")
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == test, ".ci/run must end with exactly README's test command"


def test_a_missing_part_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest.raises(BaseException): a skip where a failure is due must fail this test, not skip it.
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaseException) as missing:
        require("no g++")
    assert missing.type is pytest.fail.Exception
    assert str(missing.value) == "CI=true and a part this test needs is missing: no g++"
    with pytest.raises(BaseException) as missing:
        require_module("no_such_module", "pip install it")
    assert missing.type is pytest.fail.Exception and str(missing.value).endswith(": pip install it")
    assert "cannot import no_such_module" in str(missing.value)
    require(None)  # nothing missing: nothing happens
    assert require_module("json", "").dumps(1) == "1"
    monkeypatch.delenv("CI")
    with pytest.raises(BaseException) as missing:
        require("no g++")
    assert missing.type is pytest.skip.Exception and str(missing.value) == "no g++"


def test_every_skip_of_a_missing_part_goes_through_require() -> None:
    """A bare pytest.skip/skipif/importorskip would hide a missing part under CI=true: tests/conftest.py's
    require/require_module fail there instead."""
    bare = {"pytest.skip", "pytest.importorskip", "pytest.mark.skipif", "pytest.mark.skip"}
    found = [
        f"{path.name}:{node.lineno}: {ast.unparse(node)}"
        for path in sorted((REPO / "tests").glob("*.py"))
        if path.name != "conftest.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call | ast.FunctionDef)
        for used in ([node.func] if isinstance(node, ast.Call) else node.decorator_list)
        if ast.unparse(used) in bare
    ]
    assert found == [], "use tests/conftest.py's require(...) instead:\n" + "\n".join(found)
