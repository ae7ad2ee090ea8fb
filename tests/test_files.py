import errno
import os
import stat
from pathlib import Path

import pytest

from ray_style import files
from ray_style.errors import StorageError


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_follows_the_umask_like_open(tmp_path, umask_022):
    files.write_text_atomic(tmp_path / "a.json", "{}")
    with open(tmp_path / "plain.json", "w") as handle:
        handle.write("{}")
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "plain.json") == 0o644  # not mkstemp's 0600
    os.umask(0o077)
    files.write_text_atomic(tmp_path / "b.json", "{}")
    assert _mode(tmp_path / "b.json") == 0o600


def test_replacing_keeps_the_existing_files_mode(tmp_path, umask_022):
    path = tmp_path / "out.txt"
    path.write_text("old")
    path.chmod(0o640)
    files.write_text_atomic(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_temp_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(handle):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{handle}")).name))
        return real_fsync(handle)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    files.write_text_atomic(tmp_path / "manifest.json", "{}")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(".manifest.json.")  # the temp, still hidden
    assert events[1][1] == "manifest.json" and events[2][1] == tmp_path.name
    events.clear()
    files.write_text_atomic(tmp_path / "scratch.json", "{}", durable=False)
    assert [kind for kind, _ in events] == ["replace"]


@pytest.mark.parametrize("number,advice", [
    (errno.ENOSPC, "free space and re-run to resume"),
    (errno.EDQUOT, "quota"),
    (errno.EROFS, "read-only"),
    (errno.EACCES, "permission denied"),
])
def test_storage_failures_become_one_line_storage_errors(tmp_path, number, advice):
    path = tmp_path / "frame.png"
    path.write_bytes(b"good")
    with pytest.raises(StorageError, match=advice) as error:
        with files.atomic_path(path) as temp:
            temp.write_bytes(b"half")
            raise OSError(number, os.strerror(number))
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert "re-run" in str(error.value)
    assert path.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["frame.png"]


def test_a_real_write_to_a_full_device_is_a_storage_error(tmp_path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    path = tmp_path / "manifest.json"
    path.write_text("good")

    def full_temp(final, suffix):  # the temp beside the output lands on a device that is always full
        temp = final.with_name(f".{final.name}.full{suffix}")
        temp.symlink_to("/dev/full")
        return temp

    monkeypatch.setattr(files, "_create_temp", full_temp)
    with pytest.raises(StorageError, match="disk is full"):
        files.write_text_atomic(path, "x" * 100_000)
    assert path.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(OSError) as error:
        with files.storage_errors(tmp_path / "x"):
            raise OSError(errno.EIO, "I/O error")
    assert not isinstance(error.value, StorageError) and error.value.errno == errno.EIO
    with pytest.raises(RuntimeError, match="crash"):
        with files.atomic_path(tmp_path / "y") as temp:
            temp.write_text("partial")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_storage_errors_helper_names_the_path(tmp_path):
    with pytest.raises(StorageError, match=r"cannot write .*job.*disk is full"):
        with files.storage_errors(tmp_path / "job"):
            raise OSError(errno.ENOSPC, "No space left on device")
