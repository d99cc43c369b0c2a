"""The repository keeps its promises to a new user: README's commands are the ones CI runs."""

import re

from tests.conftest import REPO


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
