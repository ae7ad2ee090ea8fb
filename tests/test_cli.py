"""`ray-style` through main(argv), and once as the installed command."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ray_style.cli import main
from ray_style.images import save_image
from ray_style.job import open_job
from tests.conftest import DATA, SAMPLES, audio_only, frameless

FAST = ["--weights", "random", "--size", "32", "--iters", "5", "--content-weight", "1", "--style-weight", "1e3", "-q"]


def test_image_writes_the_output(tmp_path, tiny_pngs, capsys):
    content, style = tiny_pngs
    out = tmp_path / "out.png"
    assert main(["image", str(content), str(style), str(style), "-o", str(out), "--style-blend-weights", "1,2",
                 "--original-colors", "--init", "noise", "--optimizer", "adam", *FAST]) == 0
    assert out.exists() and capsys.readouterr().err == ""


def test_reconstruct_prints_a_row_per_reconstruction(tmp_path, tiny_pngs, capsys):
    content, style = tiny_pngs
    out = tmp_path / "figure.png"
    assert main(["reconstruct", str(content), str(style), "-o", str(out), "--weights", "random", "--size", "32",
                 "--iters", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["rows"]) == 10 and out.exists()


def _video_args(tmp_path, output="out.mp4", *extra):
    return ["video", str(DATA / "bunny_12f.mp4"), str(SAMPLES / "starry_night.jpg"), "-o", str(tmp_path / output),
            "--executor", "local", "--segment-length", "12", *FAST, *extra]


def test_video_and_status(tmp_path, capsys):
    assert main(_video_args(tmp_path)) == 0
    assert (tmp_path / "out.mp4").exists()
    assert main(["status", str(tmp_path / "out.job")]) == 0
    assert "finished" in capsys.readouterr().out
    with open(tmp_path / "out.job" / "events.jsonl", "a") as log:  # a worker joining is news, not a problem
        log.write(json.dumps({"time": 1.0, "kind": "joined", "worker": "w", "detail": "worker w ready on cpu"}) + "\n")
    assert main(["status", str(tmp_path / "out.job")]) == 0
    out = capsys.readouterr().out
    assert "1 worker joined" in out and "events:" not in out


BAD_IMAGE = [
    ("missing content", ["image", "{tmp}/nope.png", "{style}", "-o", "{tmp}/o.png"], 2, "image not found"),
    ("unreadable style", ["image", "{content}", "{tmp}/bad.jpg", "-o", "{tmp}/o.png"], 2, "cannot read image"),
    ("unknown layer", ["image", "{content}", "{style}", "-o", "{tmp}/o.png", "--style-layers", "relu9_1"], 2,
     "unknown layer 'relu9_1'"),
    ("unknown weights", ["image", "{content}", "{style}", "-o", "{tmp}/o.png", "--weights", "vgg91"], 3,
     "Did you mean 'vgg19'"),
    ("size out of range", ["image", "{content}", "{style}", "-o", "{tmp}/o.png", "--size", "9"], 2, "out of range"),
    ("unwritable output", ["image", "{content}", "{style}", "-o", "{tmp}/missing/o.png"], 2, "does not exist"),
    ("unknown extension", ["image", "{content}", "{style}", "-o", "{tmp}/o.xyz"], 2, "unknown extension"),
    ("output is the content", ["image", "{content}", "{style}", "-o", "{content}"], 2, "is also an input"),
    ("no L-BFGS history", ["image", "{content}", "{style}", "-o", "{tmp}/o.png", "--lbfgs-history", "0"], 2,
     "--lbfgs-history 0"),
    ("scales below VGG's minimum", ["image", "{content}", "{style}", "-o", "{tmp}/o.png", "--size", "32", "--scales",
                                    "4"], 2, "--scales 4 at --size 32"),
    ("a 200x1 content", ["image", "{thin}", "{style}", "-o", "{tmp}/o.png"], 2,
     "--size 512 makes 512x3 images, too small for the deepest layer"),
    ("a size too small for the layers", ["image", "{content}", "{style}", "-o", "{tmp}/o.png", "--size", "16"], 2,
     "too small for the deepest layer (its poolings need 16 px on each side): use --size"),
    ("a 200x1 artwork", ["image", "{content}", "{thin}", "-o", "{tmp}/o.png", "--size", "64"], 2,
     "too small for the deepest style layer"),
]
BAD_VIDEO = [
    ("missing video", ["video", "{tmp}/nope.mp4", "{style}", "-o", "{tmp}/o.mp4"], 2, "video not found"),
    ("not a video", ["video", "{tmp}/bad.jpg", "{style}", "-o", "{tmp}/o.mp4"], 2, "not a video"),
    ("still image as video", ["video", "{content}", "{style}", "-o", "{tmp}/o.mp4"], 2, "still image"),
    ("audio-only file", ["video", "{audio}", "{style}", "-o", "{tmp}/o.mp4"], 2, "audio-only"),
    ("video with no frames", ["video", "{frameless}", "{style}", "-o", "{tmp}/o.mp4"], 2, "no frame could be decoded"),
    ("unreadable style", ["video", "{clip}", "{tmp}/bad.jpg", "-o", "{tmp}/o.mp4"], 2, "cannot read image"),
    ("unwritable output", ["video", "{clip}", "{style}", "-o", "{tmp}/missing/o.mp4"], 2, "does not exist"),
    ("bad --workers", ["video", "{clip}", "{style}", "-o", "{tmp}/o.mp4", "--workers", "0"], 2, "at least 1"),
    ("bad --frames-per-worker", ["video", "{clip}", "{style}", "-o", "{tmp}/o.mp4", "--frames-per-worker", "0"], 2,
     "--frames-per-worker 0: use 1…64"),
    ("output is the input", ["video", "{tmp}/inputs/frameless.mp4", "{style}", "-o", "{tmp}/inputs/frameless.mp4"], 2,
     "is also an input"),
    ("a 200x1 artwork", ["video", "{clip}", "{thin}", "-o", "{tmp}/o.mp4", "--size", "32"], 2,
     "too small for the deepest style layer"),
    ("job dir is the output", ["video", "{clip}", "{style}", "-o", "{tmp}/o.mp4", "--job-dir", "{tmp}/o.mp4"], 2,
     "is also the output or an input"),
    ("job dir is a file", ["video", "{clip}", "{style}", "-o", "{tmp}/o.mp4", "--job-dir", "{tmp}/bad.jpg"], 2,
     "is a file: give a folder"),
]


@pytest.mark.parametrize("case,argv,code,message", BAD_IMAGE + BAD_VIDEO, ids=[c[0] for c in BAD_IMAGE + BAD_VIDEO])
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, tiny_pngs, capsys, case, argv, code, message):
    content, style = tiny_pngs
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    save_image(np.zeros((1, 200, 3), np.uint8), inputs / "thin.png")
    names = {"tmp": tmp_path, "content": content, "style": style, "clip": DATA / "bunny_12f.mp4",
             "audio": audio_only(inputs), "frameless": frameless(inputs), "thin": inputs / "thin.png"}
    argv = [a.format(**names) for a in argv]
    before = set(tmp_path.iterdir())
    extra = ["-q"] + ([] if "--weights" in argv else ["--weights", "random"])
    assert main(argv + extra) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("ray-style: error: ") and message in err and len(err.splitlines()) == 1
    assert set(tmp_path.iterdir()) == before  # no output, no partial file, no job dir


def test_changed_settings_and_locked_job_dir(tmp_path, capsys):
    assert main(_video_args(tmp_path)) == 0
    capsys.readouterr()
    assert main(_video_args(tmp_path, "out.mp4", "--seed", "5")) == 4
    err = capsys.readouterr().err
    assert "settings.style.seed: 0 → 5" in err and "--restart" in err
    manifest = json.loads((tmp_path / "out.job" / "manifest.json").read_text())
    with open_job(tmp_path / "out.job", manifest):  # another run holds the lock
        assert main(_video_args(tmp_path)) == 4
    assert "in use by another run" in capsys.readouterr().err


def test_installed_command(tmp_path, tiny_pngs):
    # The script pip installs beside this Python (the venv's bin/, which need not be on PATH).
    beside = Path(sys.executable).parent / "ray-style"
    command = str(beside) if beside.exists() else shutil.which("ray-style")
    assert command, f"no ray-style script beside {sys.executable} or on PATH: pip install -e ."
    content, style = tiny_pngs
    out = tmp_path / "o.png"
    done = subprocess.run([command, "image", str(content), str(style), "-o", str(out), *FAST],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.exists()
    bad = subprocess.run([command, "image", str(content), "nope.jpg", "-o", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "image not found" in bad.stderr


def test_preview_renders_a_grid_and_prints_the_video_commands(tmp_path, capsys):
    sheet = tmp_path / "look.png"
    argv = ["preview", str(DATA / "bunny_12f.mp4"), str(SAMPLES / "starry_night.jpg"), "-o", str(sheet), "--frames",
            "3", "--grid", "style-weight=1e2,1e4", "--executor", "local", "--weights", "random", "--size", "32",
            "--iters", "3", "--content-weight", "1", "-q"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    from PIL import Image

    with Image.open(sheet) as image:
        width, height = image.size
    assert width == 3 * 32 and height == 3 * (16 + 18)  # sources + two looks, a label strip each
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("ray-style video")]
    assert len(commands) == 2 and "--style-weight 100 " in commands[0] and "--grid" not in commands[0]
    assert "--frames" not in commands[1] and "--size 32" in commands[1] and "--executor local" in commands[1]
    outputs = [command.split(" -o ")[1].split()[0] for command in commands]
    assert len(set(outputs)) == 2  # each look's command can run after the other's
    assert "style-weight = 1e2" in out and "frames 0, 6, 11" in out and "3 stills" in out and "2 looks" in out


def test_preview_grid_varies_the_weights_too(tmp_path, capsys):
    """Every option that changes the look varies a row: two weights sources, two looks."""
    sheet = tmp_path / "look.png"
    assert main(["preview", str(DATA / "bunny_12f.mp4"), str(SAMPLES / "starry_night.jpg"), "-o", str(sheet),
                 "--frames", "1", "--grid", "weights=random,random-vgg16", "--executor", "local", "--size", "32",
                 "--iters", "2", "--content-weight", "1", "--style-weight", "1e3", "-q"]) == 0
    from ray_style.images import load_image

    picture = load_image(sheet)
    rows = [picture[34 * k + 16:34 * (k + 1), :32] for k in (0, 1, 2)]  # a 16 px label above each 18 px row
    assert rows[1].shape == rows[2].shape == (18, 32, 3) and not np.array_equal(rows[1], rows[2])
    assert "--weights random-vgg16" in capsys.readouterr().out


def test_preview_refuses_an_unknown_grid_option(tmp_path, capsys):
    argv = ["preview", str(DATA / "bunny_12f.mp4"), str(SAMPLES / "starry_night.jpg"), "-o", str(tmp_path / "x.png"),
            "--grid", "style-wieght=1,2", "--executor", "local", "--weights", "random", "-q"]
    assert main(argv) == 2
    assert "Did you mean 'style-weight'" in capsys.readouterr().err


def test_image_saves_intermediate_images_every_n_evaluations(tmp_path, tiny_pngs, capsys):
    content, style = tiny_pngs
    out = tmp_path / "cat.png"
    assert main(["image", str(content), str(style), "-o", str(out), "--save-every", "2", "--weights", "random",
                 "--size", "32", "--iters", "6", "--content-weight", "1", "--style-weight", "1e3"]) == 0
    saved = sorted(p.name for p in tmp_path.glob("cat_*.png"))
    assert saved == ["cat_00002.png", "cat_00004.png", "cat_00006.png"] and out.exists()
    from ray_style.images import load_image

    assert (load_image(tmp_path / "cat_00006.png") == load_image(out)).all()  # the last one is the result
    assert "wrote 3 intermediate images" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["file", "under a file", "read-only"])
def test_evaluate_refuses_a_report_dir_it_cannot_write_before_any_work(tmp_path, capsys, case):
    (tmp_path / "file").write_text("not a folder")
    target = {"file": tmp_path / "file", "under a file": tmp_path / "file" / "report",
              "read-only": Path("/proc/1/ray-style-report")}[case]  # not writable, even for root
    clip = str(DATA / "bunny_12f.mp4")
    assert main(["evaluate", clip, "--source", clip, "--report-dir", str(target)]) in (2, 6)
    err = capsys.readouterr().err.strip()
    assert err.startswith("ray-style: error:") and len(err.splitlines()) == 1 and "report-dir" in err


def test_status_serve_writes_nothing_into_the_job(tmp_path, capsys, monkeypatch):
    """A stopped job's page says so — made in memory: a read-only command writes nothing, not
    even through a report/ that someone turned into a link to a folder of theirs."""
    from ray_style import serve as serving

    assert main(_video_args(tmp_path)) == 0
    (tmp_path / "out.mp4").unlink()  # the job is no longer finished: its page must say "stopped"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "index.html").write_text("their own page")
    import shutil

    shutil.rmtree(tmp_path / "out.job" / "report")
    (tmp_path / "out.job" / "report").symlink_to(theirs)
    served = {}
    monkeypatch.setattr(serving, "serve", lambda job, **options: served.update(options))
    assert main(["status", str(tmp_path / "out.job"), "--serve", "--port", "0"]) == 0
    assert (theirs / "index.html").read_text() == "their own page" and sorted(p.name for p in theirs.iterdir()) == [
        "index.html"]
    assert b'id="state">stopped<' in served["index"]
