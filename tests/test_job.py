import json
import multiprocessing

import numpy as np
import pytest

from ray_style.errors import JobError
from ray_style.job import is_locked, open_job, read_log


def manifest(**settings):
    return {"version": "t", "settings": {"size": 32, **settings}, "run": {"output": "x.mp4"}}


def test_frames_are_written_atomically_and_logged(tmp_path):
    with open_job(tmp_path / "job", manifest()) as job:
        assert not job.is_done(0, 3)
        job.write_frame(0, 3, np.zeros((4, 6, 3), np.uint8), {"loss": 1.5})
        assert job.is_done(0, 3) and job.read_frame(0, 3).shape == (4, 6, 3)
        names = [p.name for p in job.frame_path(0, 3).parent.iterdir()]
        assert names == ["000003.png"]
    (tmp_path / "job" / "frames.jsonl").open("a").write('{"cut short')
    assert [r["frame"] for r in read_log(tmp_path / "job")] == [3]


def _hold(path, ready, release):
    with open_job(path, manifest()):
        ready.set()
        release.wait(10)


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(tmp_path / "job", ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        assert is_locked(tmp_path / "job")
        with pytest.raises(JobError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            open_job(tmp_path / "job", manifest())
    finally:
        release.set()
        holder.join()
    assert not is_locked(tmp_path / "job")
    open_job(tmp_path / "job", manifest()).close()


def test_changed_settings_are_listed_and_restart_clears(tmp_path):
    with open_job(tmp_path / "job", manifest()) as job:
        job.write_frame(0, 0, np.zeros((2, 2, 3), np.uint8), {})
    with open_job(tmp_path / "job", manifest(), ) as job:  # same settings: resume, frames kept
        assert job.is_done(0, 0)
    with pytest.raises(JobError, match=r"settings.size: 32 → 64.*--restart"):
        open_job(tmp_path / "job", {**manifest(), "settings": {"size": 64}})
    other_run = {**manifest(), "run": {"output": "elsewhere.mp4"}}  # run facts are not compared
    open_job(tmp_path / "job", other_run).close()
    with open_job(tmp_path / "job", {**manifest(), "settings": {"size": 64}}, restart=True) as job:
        assert not job.is_done(0, 0)
        assert json.loads((tmp_path / "job" / "manifest.json").read_text())["settings"]["size"] == 64
