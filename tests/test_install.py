"""The install files: the optional Jupyter front end stays out of CI, which installs what the README says."""

from __future__ import annotations

from pathlib import Path


def _requirements(root: Path, name: str) -> list[str]:
    lines = (root / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_the_notebook_requirements_add_a_jupyter_front_end_to_the_runtime_ones(root: Path) -> None:
    notebook = _requirements(root, "requirements-notebook.txt")
    assert notebook[0] == "-r requirements.txt"
    assert {line.split(">=")[0] for line in notebook[1:]} == {"jupyterlab", "notebook"}


def test_ci_installs_the_runtime_and_test_requirements_only(root: Path) -> None:
    ci = (root / ".ci" / "run").read_text()
    assert "pip install --quiet -r requirements.txt" in ci and "pip install --quiet -r requirements-dev.txt" in ci
    assert "requirements-notebook.txt" not in ci
    assert not any(r.startswith(("jupyterlab", "notebook")) for r in _requirements(root, "requirements-dev.txt"))
