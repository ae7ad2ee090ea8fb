import json

import numpy as np
import pytest

from ray_style import report, video
from ray_style.cli import main
from ray_style.config import StyleSettings
from ray_style.errors import InputError
from tests.conftest import DATA, SAMPLES

CLIP = DATA / "bunny_12f.mp4"


def test_a_video_against_itself_is_stable_and_noise_is_not(tmp_path, random_vgg, painting):
    itself = report.evaluate(CLIP, CLIP, [painting], random_vgg, StyleSettings(size=64))
    assert itself.frames == 12 and len(itself.per_frame) == 12 and itself.content_loss == 0
    assert itself.style_loss > 0 and itself.warping_error < 2e-3
    rng = np.random.default_rng(0)
    noisy = video.encode((rng.integers(0, 256, (36, 64, 3), dtype=np.uint8) for _ in range(12)),
                         tmp_path / "noise.mp4", 64, 36, video.probe(CLIP).fps)
    flicker = report.evaluate(noisy, CLIP)
    assert flicker.warping_error > 20 * itself.warping_error and flicker.content_loss is None


def test_report_files_and_frame_mismatch(tmp_path, random_vgg, painting):
    evaluation = report.evaluate(CLIP, CLIP, [painting], random_vgg, StyleSettings(size=64))
    folder = report.write_report(evaluation, CLIP, CLIP, tmp_path / "report")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["contact_sheet.png", "content_loss.png", "evaluation.json", "side_by_side.mp4", "style_loss.png",
                     "warping_error.png"]
    assert video.probe(folder / "side_by_side.mp4").width == 128
    short = video.encode(video.decode(video.probe(CLIP), 64, 36), tmp_path / "short.mp4", 64, 36, 25)
    with pytest.raises(InputError):
        report.evaluate(short, DATA / "bikes_cut.mp4")


def test_evaluate_cli_json(tmp_path, capsys):
    assert main(["evaluate", str(CLIP), "--source", str(CLIP), "--style", str(SAMPLES / "starry_night.jpg"),
                 "--weights", "random", "--json", "--report-dir", str(tmp_path / "r")]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert set(numbers) == {"frames", "warping_error", "content_loss", "style_loss"} and numbers["frames"] == 12
    assert (tmp_path / "r" / "warping_error.png").exists()
