"""The notebook: executed top to bottom in a real Jupyter kernel with a tiny budget."""

from __future__ import annotations

import base64
import os
import re
import struct
from pathlib import Path

import imageio.v2 as imageio
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebook.ipynb"
# Replaces the notebook's `parameters` cell: 4 episodes, a video every 2.
TINY_BUDGET = 'EPISODES = 4\nVIDEO_EVERY = 2\nSEED = 0\nCHECKPOINT = "notebook_checkpoint.pth"\n'
MP4_PAYLOAD = re.compile(r"data:video/mp4;base64,([A-Za-z0-9+/=]+)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_saved_clean() -> None:
    nb = read_notebook()
    nbformat.validate(nb)
    assert all(cell.get("id") for cell in nb.cells), "every cell needs an id (nbformat 4.5)"
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "save the notebook without outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one code cell must be tagged `parameters`"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, Path]:
    """The notebook run in a temporary folder, so its runs/ and videos/ stay out of the repository."""
    workdir = tmp_path_factory.mktemp("notebook")
    nb = read_notebook()
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = TINY_BUDGET
    # main.py is importable from the repository root; the kernel runs elsewhere, so point PYTHONPATH at it.
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "SDL_VIDEODRIVER": "dummy", "MPLBACKEND": "Agg"}
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)  # a cell that raises fails here with CellExecutionError
    return nb, workdir


def outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    """Every ``mime`` payload among the notebook's display outputs, in cell order."""
    return [
        out.data[mime]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type in ("display_data", "execute_result") and mime in out.get("data", {})
    ]


def test_notebook_runs_without_errors(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    nb, workdir = executed
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, f"cell error: {errors[0].ename}: {errors[0].evalue}" if errors else ""
    assert len(list(workdir.glob("runs/*/last.pth"))) == 1  # every run keeps the weights it ended with
    assert not (workdir / "notebook_checkpoint.pth").exists()  # only a run that solves writes the checkpoint
    assert sorted(p.name for p in workdir.glob("videos/*/episode_*.mp4")) == ["episode_0002.mp4", "episode_0004.mp4"]
    assert not (ROOT / "notebook_checkpoint.pth").exists()


def test_notebook_shows_playable_videos(executed: tuple[nbformat.NotebookNode, Path], tmp_path: Path) -> None:
    nb, _ = executed
    html = "\n".join(outputs(nb, "text/html"))
    assert "<video" in html
    payloads = MP4_PAYLOAD.findall(html)
    # show_video: the newest one; show_videos: both of the run.
    assert len(payloads) == 3, f"expected 3 embedded videos, found {len(payloads)}"
    for i, payload in enumerate(payloads):
        path = tmp_path / f"video_{i}.mp4"
        path.write_bytes(base64.b64decode(payload, validate=True))
        reader = imageio.get_reader(path, format="FFMPEG")
        try:
            frame = next(iter(reader.iter_data()))
        finally:
            reader.close()
        assert frame.shape == (400, 600, 3), f"video {i}: frame shape {frame.shape}"


def test_notebook_shows_the_progress_table(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    nb, workdir = executed
    (table,) = [html for html in outputs(nb, "text/html") if "<table>" in html]
    assert table.count("<tr>") == 3  # the header and one row per video: episodes 1-2 and 3-4
    assert "<b>1-2</b>" in table and "<b>3-4</b>" in table
    assert table.count('src="data:image/webp;base64,') == 2  # the thumbnails travel with the notebook
    (run,) = workdir.glob("runs/*/progress.md")  # written at the end of the run as well
    assert "| **3-4** |" in run.read_text()


def test_notebook_shows_the_learning_curve(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    nb, _ = executed
    (png_b64,) = outputs(nb, "image/png")
    png = base64.b64decode(png_b64, validate=True)
    assert png[:8] == PNG_SIGNATURE
    # The IHDR chunk comes first: length, b"IHDR", then width and height as big-endian 32-bit integers.
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (900, 500)
