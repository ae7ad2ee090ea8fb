"""A finished job turned against its owner, at random: each seeded mutation (a file truncated,
replaced, bit-flipped, deleted, a JSON field edited, a file swapped for a folder, a symlink or a
hard link planted) is applied to a fresh copy of one finished job, and the same command runs
again. It must either deliver the identical video with exit 0, or stop with one line and a
non-zero exit — never a different or shorter video with exit 0 — and change nothing outside
the job. On a folder and on a real S3 bucket (SeaweedFS)."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from ray_style import store
from ray_style.cli import main
from tests.test_runner import CLIP, STYLE

pytestmark = pytest.mark.slow

ARGS = ["--size", "32", "--iters", "6", "--content-weight", "1", "--style-weight", "1e3", "--content-layers",
        "relu2_1", "--style-layers", "relu1_1,relu2_1", "--segment-length", "5", "--overlap", "2", "--weights",
        "random", "--executor", "local", "--threads", "2", "--init", "flow", "--no-report", "-q"]
BYTES = ("truncate", "replace", "flip", "delete", "edit json")
LINKS = ("swap", "symlink", "hard link", "symlinked folder")
ODD = [-1, 0, 3, 10 ** 12, "x", None, [], {}, [[0, 2, 0]], 1.5, True]


def _edit_json(rng: random.Random, data: bytes) -> bytes:
    """One field of a JSON object (or of one line of a JSON-lines file) set to an odd value."""
    lines = data.decode("utf-8", "replace").splitlines() or ["{}"]
    at = rng.randrange(len(lines))
    try:
        value = json.loads(lines[at])
    except ValueError:
        value = {}
    target = value
    while isinstance(target, dict) and target:
        key = rng.choice(sorted(target))
        if isinstance(target[key], (dict, list)) and target[key] and rng.random() < 0.5:
            target = target[key] if isinstance(target[key], dict) else {"_": None}
            continue
        target[key] = rng.choice(ODD)
        break
    lines[at] = json.dumps(value)
    return ("\n".join(lines) + "\n").encode()


def mutate(rng: random.Random, job: store.Store, outside: Path) -> str:
    """Apply one random mutation to ``job``; returns what was done (for the failure message)."""
    keys = sorted(job.sizes(""))
    key = rng.choice(keys)
    kinds = BYTES + (LINKS if isinstance(job, store.LocalStore) else ())
    kind = rng.choice([k for k in kinds if (k != "edit json" or key.endswith((".json", ".jsonl")))
                       and (k != "symlinked folder" or "/" in key)])  # the job's own folder may be a link
    data = job.read(key)
    if kind == "truncate":
        job.write(key, data[: rng.randrange(len(data) + 1)])
    elif kind == "replace":
        job.write(key, rng.randbytes(rng.randrange(1, 2 * len(data) + 2)))
    elif kind == "flip":
        at = rng.randrange(max(len(data), 1))
        job.write(key, data[:at] + bytes([(data[at] if data else 0) ^ (1 << rng.randrange(8))]) + data[at + 1:])
    elif kind == "delete":
        job.delete(key)
    elif kind == "edit json":
        job.write(key, _edit_json(rng, data))
    else:
        path = job.path(key)
        theirs = outside / f"theirs-{rng.randrange(1 << 30)}"
        if kind == "swap":  # a folder where the file was
            path.unlink()
            path.mkdir()
            (path / "inside").write_bytes(data)
        elif kind == "symlink":
            theirs.write_bytes(data)
            path.unlink()
            path.symlink_to(theirs)
        elif kind == "hard link":
            theirs.write_bytes(data)
            path.unlink()
            path.hardlink_to(theirs)
        else:  # the file's folder becomes a link to a folder of theirs holding a copy of it
            theirs.mkdir()
            shutil.copytree(path.parent, theirs, dirs_exist_ok=True)
            shutil.rmtree(path.parent)
            path.parent.symlink_to(theirs)
    return f"{kind} {key}"


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def check_rerun(argv, output_bytes, reference: bytes, what: str, capsys) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    if code == 0:
        assert output_bytes() == reference, f"{what}: exit 0 with another video"
    else:
        assert len(err.splitlines()) == 1 and err.startswith("ray-style: error: "), f"{what}: {err}"


@pytest.fixture(scope="module")
def finished_local(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    assert main(["video", str(CLIP), str(STYLE), "-o", str(folder / "out.mp4"), *ARGS]) == 0
    return folder / "out.job", (folder / "out.mp4").read_bytes()


@pytest.mark.parametrize("seed", range(48))
def test_a_mutated_job_gives_the_same_video_or_one_line(finished_local, tmp_path, capsys, seed):
    reference_job, reference = finished_local
    job = tmp_path / "out.job"
    shutil.copytree(reference_job, job, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "their notes.txt").write_text("theirs")
    what = mutate(random.Random(seed), store.LocalStore(job), outside)
    before = snapshot(outside)
    output = tmp_path / "out.mp4"
    check_rerun(["video", str(CLIP), str(STYLE), "-o", str(output), *ARGS], output.read_bytes, reference, what, capsys)
    assert snapshot(outside) == before, f"{what}: a file outside the job changed"
    assert sorted(p.name for p in tmp_path.iterdir()) in (["out.job", "outside"], ["out.job", "out.mp4", "outside"])


def test_a_mutated_bucket_job_gives_the_same_video_or_one_line(s3, capsys):
    fs = store.filesystem(s3)
    fs.put_file(str(CLIP), f"{s3}/in/clip.mp4")
    fs.put_file(str(STYLE), f"{s3}/art/style.jpg")
    command = ["video", f"{s3}/in/clip.mp4", f"{s3}/art/style.jpg"]
    assert main([*command, "-o", f"{s3}/ref/out.mp4", *ARGS]) == 0
    reference = store.read_bytes(f"{s3}/ref/out.mp4")
    keys = sorted(store.open_store(f"{s3}/ref/out.job").sizes(""))
    for seed in range(12):
        run = f"{s3}/run{seed}"
        for key in keys:  # a fresh copy of the finished job
            fs.copy(f"{s3}/ref/out.job/{key}", f"{run}/out.job/{key}")
        what = mutate(random.Random(seed), store.open_store(f"{run}/out.job"), Path("/nonexistent"))
        check_rerun([*command, "-o", f"{run}/out.mp4", *ARGS], lambda: store.read_bytes(f"{run}/out.mp4"), reference,
                    what, capsys)
        assert store.read_bytes(f"{s3}/in/clip.mp4") == CLIP.read_bytes()  # the inputs beside it untouched
