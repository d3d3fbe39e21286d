"""Saves a user can trust: a full disk, stale temporary files."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from dqnkit.errors import UserError
from dqnkit.files import remove_stale_temp_files, save_torch

# ---------------------------------------------------------------- a full disk


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: the write that crosses it writes what fits, then fails."""

    room = 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        left = self.room - self.tell()
        if len(data) > left:
            if left > 0:
                super().write(data[:left])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def _open_temp_files() -> list[str]:
    """The temporary files (``.<name>...tmp``) this process has a descriptor on, deleted or not."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
            if re.match(r"^\..*\.tmp", Path(target).name):
                found.append(target)
    return found


def _fill_disk(monkeypatch: pytest.MonkeyPatch, room: int, buffered: bool, when=lambda name: True) -> list[str]:
    """Make the temporary files of the saves for which ``when(name)`` holds sit on a full disk.

    Returns the list the names of those temporary files are appended to.
    """
    fdopen = os.fdopen
    failed: list[str] = []

    def full_fdopen(fd: int, mode: str = "r", *args, **kwargs):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "w" not in mode or not when(name):
            return fdopen(fd, mode, *args, **kwargs)
        failed.append(name)
        raw = type("Full", (_FullDisk,), {"room": room})(fd, "wb")
        return io.BufferedWriter(raw) if buffered else raw

    monkeypatch.setattr(os, "fdopen", full_fdopen)
    return failed


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered file", "raw file"])
def test_save_on_a_full_disk_is_one_error_and_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffered: bool
) -> None:
    """torch.save raises what its file raised, or (unbuffered) a RuntimeError caused by it: both are one line."""
    target = tmp_path / "state.pth"
    save_torch({"w": torch.zeros(10)}, target)
    before = target.read_bytes()
    failed = _fill_disk(monkeypatch, room=1000, buffered=buffered)
    message = r"^cannot save .*state\.pth: No space left on device; the previous state\.pth is unchanged$"
    with pytest.raises(UserError, match=message):
        save_torch({"w": torch.randn(100_000)}, target)
    assert len(failed) == 1
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.pth"]  # the temporary file is gone
    assert not _open_temp_files()  # and no descriptor keeps its space


# ---------------------------------------------------------------- stale temporary files


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_remove_stale_temp_files_by_hand(tmp_path: Path) -> None:
    dead = _dead_pid()
    names = {
        f".a.pth.{dead}.abcd1234.tmp": False,
        f".a.pth.{os.getpid()}.abcd1234.tmp": True,  # alive
        f".b.mp4.{dead}.abcd1234.tmp.mp4": False,  # a video's, which keeps its extension
        ".a.pth.abcd1234.tmp": False,
        "a.pth": True,
        ".hidden": True,
        "notes.tmp": True,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temp_files(tmp_path, "a.pth")
    assert sorted(p.name for p in removed) == sorted([f".a.pth.{dead}.abcd1234.tmp", ".a.pth.abcd1234.tmp"])
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [f".b.mp4.{dead}.abcd1234.tmp.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(name for name, kept in names.items() if kept)
    assert remove_stale_temp_files(tmp_path / "missing") == []
