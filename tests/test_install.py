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


def test_the_tuner_requirements_are_optional_and_the_tests_install_them(root: Path) -> None:
    tune = _requirements(root, "requirements-tune.txt")
    assert tune[0] == "-r requirements.txt" and not any(line.startswith("torch") for line in tune)  # torch stays pinned
    assert {line.split(">=")[0] for line in tune[1:]} == {"optuna", "psycopg[binary]"}
    assert "optuna>=5.0,<6" in tune
    assert "-r requirements-tune.txt" in _requirements(root, "requirements-dev.txt")


def test_ci_installs_the_postgresql_server_the_tuner_tests_start_when_it_is_missing(root: Path) -> None:
    ci = (root / ".ci" / "run").read_text()
    assert 'compgen -G "/usr/lib/postgresql/*/bin/initdb"' in ci
    assert "DEBIAN_FRONTEND=noninteractive apt-get install -y" in ci and " postgresql " in ci
    assert ci.index("apt-get install") < ci.index("python -m pytest")
