import json
import multiprocessing
import zipfile

import numpy as np
import pytest

from ray_style import plan
from ray_style.errors import JobError
from ray_style.codec import png_bytes
from ray_style.job import DamagedFile, Layout, is_locked, job_status, open_job, read_events, read_log

CHAINS = plan.plan_chains(6, [], 3, 1)


def manifest(**settings):
    return {"version": "t", "input": {"sha256": "a"}, "settings": {"size": 32, **settings}, "frame_size": [6, 4],
            "run": {"output": "x.mp4"}}


def image(value=0):
    return np.full((4, 6, 3), value, np.uint8)


def open_planned(root, **kwargs):
    job = open_job(root, kwargs.pop("m", manifest()), **kwargs)
    job.set_plan(CHAINS)
    return job


def test_frames_are_written_atomically_logged_and_verified(tmp_path):
    with open_planned(tmp_path / "job") as job:
        assert not job.is_done(0, 2)
        job.write_frame(0, 2, png_bytes(image(7)), {"loss": 1.5})
        assert job.is_done(0, 2) and job.read_frame(0, 2)[0, 0, 0] == 7
        assert [p.name for p in job.layout.frame(0, 2).parent.iterdir()] == ["000002.png"]
    (tmp_path / "job" / "frames.jsonl").open("a").write('{"cut short')
    record = read_log(tmp_path / "job")[0]
    assert record["frame"] == 2 and len(record["sha256"]) == 64 and record["bytes"] > 0
    with open_planned(tmp_path / "job") as job:  # resumed: the cut-short line is ignored, the frame kept
        assert job.is_done(0, 2)


def test_an_altered_frame_is_refused_when_read_and_a_resized_one_is_redone(tmp_path):
    with open_planned(tmp_path / "job") as job:
        job.write_frame(0, 1, png_bytes(image(1)), {})
        job.write_frame(0, 2, png_bytes(image(2)), {})
        path = job.layout.frame(0, 1)
        data = bytearray(path.read_bytes())
        data[-20] ^= 0xFF  # same size, other bytes (bit rot)
        path.write_bytes(bytes(data))
        with pytest.raises(DamagedFile, match="checksum") as damage:
            job.read_frame_bytes(0, 1)
        job.discard(damage.value)
        assert not job.is_done(0, 1) and not path.exists()
        job.layout.frame(0, 2).write_bytes(png_bytes(np.zeros((10, 10, 3), np.uint8)))  # another size
    with open_planned(tmp_path / "job") as job:
        assert not job.is_done(0, 2) and not job.layout.frame(0, 2).exists()
    kinds = [(e["kind"], e.get("frame")) for e in read_events(tmp_path / "job")]
    assert ("repaired", 1) in kinds and ("repaired", 2) in kinds


def test_a_file_no_record_vouches_for_is_not_used(tmp_path):
    with open_planned(tmp_path / "job") as job:
        job.write_frame(0, 0, png_bytes(image()), {})
    (tmp_path / "job" / "frames.jsonl").unlink()  # e.g. a crash between the file and its record
    with open_planned(tmp_path / "job") as job:
        assert not job.is_done(0, 0) and not job.layout.frame(0, 0).exists()


def test_frames_of_other_settings_are_never_reused_even_without_a_manifest(tmp_path):
    with open_planned(tmp_path / "job") as job:
        job.write_frame(0, 0, png_bytes(image()), {})
    (tmp_path / "job" / "manifest.json").unlink()
    with open_planned(tmp_path / "job", m=manifest(size=64)) as job:  # another style/size, manifest gone
        assert not job.is_done(0, 0)
    (tmp_path / "job" / "manifest.json").write_text("{garbage")
    with open_planned(tmp_path / "job", m=manifest(size=64)) as job:
        assert json.loads((tmp_path / "job" / "manifest.json").read_text())["settings"]["size"] == 64
    assert any("unreadable" in e.get("detail", "") for e in read_events(tmp_path / "job"))


def test_a_garbage_manifest_with_restart_starts_over(tmp_path):
    open_planned(tmp_path / "job").close()
    (tmp_path / "job" / "manifest.json").write_bytes(b"\x00\xff not json")
    with open_planned(tmp_path / "job", restart=True) as job:
        assert job.manifest["settings"]["size"] == 32


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
    with open_planned(tmp_path / "job") as job:
        job.write_frame(0, 0, png_bytes(image()), {})
    with open_planned(tmp_path / "job") as job:  # same settings: resume, frames kept
        assert job.is_done(0, 0)
    with pytest.raises(JobError, match=r"settings.size: 32 → 64.*--restart"):
        open_job(tmp_path / "job", manifest(size=64))
    other_run = {**manifest(), "run": {"output": "elsewhere.mp4"}}  # run facts are not compared
    open_job(tmp_path / "job", other_run).close()
    with open_planned(tmp_path / "job", m=manifest(size=64), restart=True) as job:
        assert not job.is_done(0, 0) and not (tmp_path / "job" / "chains" / "0000" / "000000.png").exists()
        assert json.loads((tmp_path / "job" / "manifest.json").read_text())["settings"]["size"] == 64


@pytest.mark.parametrize("restart", [False, True])
def test_a_directory_that_is_not_a_job_is_refused_and_left_alone(tmp_path, restart):
    folder = tmp_path / "mine"
    (folder / "source").mkdir(parents=True)
    (folder / "manifest.json").write_text('{"my": "own project"}')
    (folder / "source" / "notes.txt").write_text("precious")
    with pytest.raises(JobError, match="not a ray-style job directory"):
        open_job(folder, manifest(), restart=restart)
    assert (folder / "source" / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "source"]


def test_source_index_must_match_its_key_and_checksums(tmp_path):
    with open_job(tmp_path / "job", manifest()) as job:
        hashes = [job.write_source(i, image(i)) for i in range(3)]
        job.finish_source(3, [], hashes)
        assert job.source_index()["frames"] == 3
        assert job.read_source(2)[0, 0, 0] == 2
        job.layout.source(1).write_bytes(b"")
        assert job.damaged_sources() == [1]
        with pytest.raises(DamagedFile):
            job.read_source_bytes(1)
        (tmp_path / "job" / "source" / "index.json").write_text("[1, 2")
        assert job.source_index() is None
        job.finish_source(3, [], hashes)
    with open_job(tmp_path / "job", manifest(cut_ratio=2.0), restart=True) as job:
        assert job.source_index() is None  # another decode's (its cuts found otherwise)


def test_flow_files_are_read_without_building_an_ast(monkeypatch):
    """numpy's .npy header parser calls ast.literal_eval; CPython 3.11.7 raises SystemError when
    two threads build ASTs at once (gh-106905), which a CI run met while a thread per core read
    flows. load_flow reads the same values without it."""
    import ast
    import io

    from ray_style.codec import flow_bytes
    from ray_style.codec import load_flow

    rng = np.random.default_rng(0)
    data = flow_bytes(rng.normal(0, 5, (9, 16, 2)).astype(np.float32), rng.random((9, 16)))
    with np.load(io.BytesIO(data)) as arrays:
        expected = arrays["back"].astype(np.float32), arrays["mask"].astype(np.float32) / 255

    built, parse = [], ast.parse
    monkeypatch.setattr(ast, "parse", lambda *args, **kwargs: built.append(args) or parse(*args, **kwargs))
    back, mask = load_flow(data)
    monkeypatch.undo()
    assert built == []
    assert back.dtype == mask.dtype == np.float32
    assert np.array_equal(back, expected[0]) and np.array_equal(mask, expected[1])
    def npz(back, mask):
        buffer = io.BytesIO()
        np.savez(buffer, back=back, mask=mask)
        return buffer.getvalue()

    fortran = npz(np.asfortranarray(np.zeros((4, 6, 2), np.float16)), np.zeros((4, 6), np.uint8))
    flat = npz(np.zeros((4, 6), np.float16), np.zeros((4, 6), np.uint8))
    flipped = data[:200] + bytes([data[200] ^ 0xFF]) + data[201:]
    for damaged in (data[:40], data[:-30], flipped, fortran, flat):
        with pytest.raises((ValueError, KeyError, zipfile.BadZipFile)):
            load_flow(damaged)


def test_a_damaged_flow_file_is_reported(tmp_path):
    from ray_style.codec import flow_bytes

    with open_job(tmp_path / "job", manifest()) as job:
        job.open_flows("k")
        job.write_flow(3, 2, flow_bytes(np.zeros((4, 6, 2), np.float32), np.ones((4, 6))))
        assert len(job.read_flow_bytes(3, 2)) > 0
        job.layout.flow(3, 2).write_bytes(job.layout.flow(3, 2).read_bytes()[:40])
        with pytest.raises(DamagedFile, match="damaged") as damage:
            job.read_flow_bytes(3, 2)
        assert (damage.value.frame, damage.value.target) == (3, 2)
        job.open_flows("another method")  # flows of other sources or methods are dropped
        assert not job.has_flow(3, 2)


@pytest.mark.parametrize("damage", ["index", "frames", "manifest keys", "manifest"])
def test_status_survives_damaged_files(tmp_path, damage):
    root = tmp_path / "job"
    with open_planned(root) as job:
        hashes = [job.write_source(i, image()) for i in range(6)]
        job.finish_source(6, [], hashes)
        job.write_frame(0, 0, png_bytes(image()), {"seconds": 1.0, "worker": "w"})
    if damage == "index":
        (root / "source" / "index.json").write_text("nonsense{")
    elif damage == "frames":
        (root / "frames.jsonl").write_text("[1, 2]\n\x00\x01garbage\n{\"frame\": \"x\"}\n")
    elif damage == "manifest keys":
        (root / "manifest.json").write_text('{"version": "t"}')
    else:
        (root / "manifest.json").write_text("{broken")
    status = job_status(root)
    assert status["job_dir"] == str(root) and not status["running"]
    assert status["damaged"] == damage.startswith("manifest")


def test_a_pass_frame_is_reused_only_under_the_same_sweep_layout(tmp_path):
    """Pass frames are stored by their sweep's index: the same index under another layout of
    sweeps (an older version's) is another frame's work and must not count as done."""
    chains = plan.plan_chains(30, [], 12, 4)
    layout = plan.refinement_passes(chains, [], 30, 1)
    with open_job(tmp_path / "job", manifest(passes=1)) as job:
        job.set_plan(chains, layout)
        sweep = layout[0][0]
        job.write_frame(sweep.index, sweep.frames[0], png_bytes(image(3)), {"loss": 1.0})
        assert job.is_done(sweep.index, sweep.frames[0])
    with open_job(tmp_path / "job", manifest(passes=1)) as job:
        job.set_plan(chains, layout)
        assert job.is_done(sweep.index, sweep.frames[0])
    older = [[plan.Sweep(plan.PASS_BASE + n, q.start, q.end) for n, q in enumerate(layout[0])]]
    with open_job(tmp_path / "job", manifest(passes=1)) as job:
        job.set_plan(chains, older)
        assert not job.is_done(sweep.index, sweep.frames[0])


def test_only_the_marker_makes_a_directory_a_job(tmp_path):
    """A folder whose manifest.json happens to have a job's keys is still the user's."""
    folder = tmp_path / "looks_like_one"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest()))
    (folder / "mine.txt").write_text("precious")
    for restart in (False, True):
        with pytest.raises(JobError, match="not a ray-style job directory"):
            open_job(folder, manifest(), restart=restart)
    assert (folder / "mine.txt").read_text() == "precious"
    with pytest.raises(JobError, match="no .ray-style-job marker"):
        job_status(folder)


CPU = {"device": "cpu", "precision": "fp32", "compile": False, "graphs": False, "threads": 2}
CUDA = {"device": "cuda", "precision": "bf16", "compile": True, "graphs": True}


def test_frames_of_one_job_are_never_rendered_two_ways(tmp_path):
    with open_planned(tmp_path / "job") as job:
        job.check_render(CPU)
        job.write_frame(0, 0, png_bytes(image()), {"render": CPU})
    with open_planned(tmp_path / "job") as job:
        assert job.recorded_threads() == 2  # what a resume that names no --threads renders with
        with pytest.raises(JobError, match="1 finished frames of this job were rendered on cpu in fp32 with 2 torch "
                                           "threads, and this run would render on cuda in bf16 .compile and graphs."):
            job.check_render(CUDA)
        with pytest.raises(JobError, match="with 1 torch threads"):
            job.check_render({**CPU, "threads": 1})
        job.check_render(CPU)
    with open_planned(tmp_path / "job", restart=True) as job:  # a restart renders every frame again
        job.check_render(CUDA)
    assert json.loads((tmp_path / "job" / "manifest.json").read_text())["render"] == CUDA


def test_the_layout_is_spelled_once(tmp_path):
    layout = Layout(tmp_path)
    assert layout.frame(4, 123) == tmp_path / "chains" / "0004" / "000123.png"
    assert layout.source(7) == tmp_path / "source" / "000007.png"
    assert layout.flow(3, 2) == tmp_path / "flow" / "000003_000002.npz"
    assert layout.page == tmp_path / "report" / "index.html"


def test_a_chains_frames_are_keyed_by_that_chain_alone_and_older_keys_still_count(tmp_path):
    """A chain's renders are recorded under a key of the job and that chain (so a chain can render
    before the rest of the plan is known: add_chains): they stay done under any plan that keeps
    the chain, and not under one that changes it. Frames of earlier versions, recorded under the
    whole plan's key, stay done under that plan."""
    whole = plan.plan_chains(30, [], 12, 4)  # (0, 12) (8, 21) (17, 30)
    with open_job(tmp_path / "job", manifest()) as job:
        job.add_chains(whole[:1])  # the film still decoding: only the first chain is known
        job.write_frame(0, 3, png_bytes(image(3)), {})
        assert read_log(tmp_path / "job")[-1]["job"] == job.chain_key(whole[0])
        job.set_plan(whole)  # the plan whole: the frame is done under it
        assert job.is_done(0, 3)
        job.write_frame(1, 9, png_bytes(image(4)), {})
    with open_job(tmp_path / "job", manifest()) as job:
        job.add_chains(whole[:2])  # a resume while decoding: both frames were done before
        assert job.is_done(0, 3) and job.is_done(1, 9)
    other = plan.plan_chains(30, [], 10, 4)  # another first chain (0, 10): its frame 3 is not ours
    with open_job(tmp_path / "job", manifest()) as job:
        job.set_plan(other)
        assert not job.is_done(0, 3) and not job.layout.frame(0, 3).exists()
    with open_job(tmp_path / "job2", manifest()) as job:  # a job of an earlier version
        job.set_plan(whole)
        job.write_frame(2, 20, png_bytes(image(5)), {})
        old = read_log(tmp_path / "job2")[-1]
        (tmp_path / "job2" / "frames.jsonl").write_text(json.dumps({**old, "job": job.key_for(whole)}) + "\n")
    with open_job(tmp_path / "job2", manifest()) as job:
        job.set_plan(whole)
        assert job.is_done(2, 20)


def test_a_plan_lost_is_found_again_from_its_frames_under_either_rule(tmp_path):
    """Without plan.json, the plan the recorded frames were made under is found again: the
    balanced pieces of an earlier version, or a shorter length the pool asked for."""
    from types import SimpleNamespace

    from ray_style.runner import _recorded_plan
    from ray_style.settings import VideoSettings

    request = SimpleNamespace(settings=VideoSettings(segment_length=10, overlap=2, passes=0))
    for rule, length in (("balanced", 10), ("fixed", 8)):
        chains = plan.plan_chains(45, [], length, 2, rule)
        assert chains != plan.plan_chains(45, [], 10, 2)  # not what a new plan would be
        with open_job(tmp_path / rule, manifest()) as job:
            job.set_plan(chains)
            job.write_frame(0, chains[0].end - 1, png_bytes(image(1)), {})
            if rule == "balanced":  # recorded as an earlier version did: under the whole plan's key
                record = read_log(tmp_path / rule)[-1]
                (tmp_path / rule / "frames.jsonl").write_text(json.dumps({**record, "job": job.key_for(chains)}) + "\n")
        with open_job(tmp_path / rule, manifest()) as job:
            assert _recorded_plan(job, request, 45, []) == chains
