import json

import numpy as np
import pytest
import torch

from ray_style import flow, images, optimize, video
from ray_style.cli import main
from ray_style.errors import InputError
from ray_style.evaluate import evaluate
from ray_style.page import write_report
from ray_style.settings import StyleSettings
from tests.conftest import DATA, SAMPLES

CLIP = DATA / "bunny_12f.mp4"
SHALLOW = StyleSettings(size=64, content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))  # a short VGG: fast


def frames_of(path, width=64, height=36):
    return list(video.decode(video.probe(path), width, height))


def encoded(frames, path):
    return video.encode(iter(frames), path, frames[0].shape[1], frames[0].shape[0], video.probe(CLIP).fps, crf=10)


def test_a_video_against_itself_is_stable_and_noise_is_not(tmp_path, random_vgg, painting):
    itself = evaluate(CLIP, CLIP, styles=[painting], weights=random_vgg, settings=SHALLOW)
    assert itself.frames == 12 and len(itself.per_frame) == 12 and itself.content_loss == 0
    assert itself.style_loss > 0 and itself.warping_error < 2e-3
    assert itself.source_warping_error == itself.warping_error
    assert itself.long_range_warping_error == itself.source_long_range_warping_error
    assert set(itself.long_range_warping_error) == {"5", "10"}
    assert itself.long_range_warping_error["10"] > itself.long_range_warping_error["5"] > itself.warping_error
    rng = np.random.default_rng(0)
    noisy = video.encode((rng.integers(0, 256, (36, 64, 3), dtype=np.uint8) for _ in range(12)),
                         tmp_path / "noise.mp4", 64, 36, video.probe(CLIP).fps)
    flicker = evaluate(noisy, CLIP)
    assert flicker.warping_error > 20 * itself.warping_error and flicker.content_loss is None
    assert flicker.source_warping_error == pytest.approx(itself.source_warping_error)


def test_long_range_error_pairs_frames_k_apart(tmp_path):
    """An output that drifts by δ per frame: frame t+k differs from frame t by k·δ, so its
    long-range error exceeds the source's (halved by the contrast) by 3 (kδ)²."""
    delta = 3 / 255
    drifting = [np.clip(0.5 * f + 64 + 255 * delta * t, 0, 255).round().astype(np.uint8)
                for t, f in enumerate(frames_of(CLIP))]
    for mode in ("direct", "composed"):
        scores = evaluate(encoded(drifting, tmp_path / "drift.mp4"), CLIP, long_range_flow=mode, threads=2)
        assert scores.long_range_flow == mode
        for k in (5, 10):
            excess = scores.long_range_warping_error[str(k)] - 0.25 * scores.source_long_range_warping_error[str(k)]
            assert excess == pytest.approx(3 * (k * delta) ** 2, rel=0.25), (mode, k)
            assert [r["frame"] for r in scores.per_frame if f"warping_error_k{k}" in r] == list(range(12 - k))
            assert 0.5 < scores.long_range_coverage[str(k)] <= 1


def test_batched_losses_match_one_frame_at_a_time(tmp_path, random_vgg, painting):
    rng = np.random.default_rng(1)
    source = frames_of(CLIP)
    output = [np.clip(f.astype(int) + rng.integers(-40, 41, f.shape), 0, 255).astype(np.uint8) for f in source]
    clip = encoded(output, tmp_path / "out.mp4")
    settings = SHALLOW
    five = evaluate(clip, CLIP, styles=[painting], weights=random_vgg, settings=settings, batch_size=5, long_range=())  # 5, 5, 2
    decoded = frames_of(clip)
    resolved = optimize.resolve_loss_weights(settings, random_vgg, 64 * 36)
    model = optimize.build_model(random_vgg, resolved)
    grams = optimize.style_targets(model, optimize.prepare_styles([painting], 64, 1.0, "cpu"), settings.style_layers)
    for index in (0, 7, 11):  # against the optimizer's own objective, frame by frame
        objective = optimize.Objective(model, resolved, images.to_tensor(source[index]), grams)
        with torch.no_grad():
            _, content, style = objective(images.to_tensor(decoded[index]))
        row = five.per_frame[index]
        assert row["content_loss"] == pytest.approx(float(content), rel=1e-4) and row["content_loss"] > 0
        assert row["style_loss"] == pytest.approx(float(style), rel=1e-4)
    assert five.long_range_warping_error == {}


def test_a_ready_model_grams_and_cached_flows_are_used(monkeypatch, random_vgg, painting):
    settings = optimize.resolve_loss_weights(SHALLOW, random_vgg, 64 * 36)
    model = optimize.build_model(random_vgg, settings)
    grams = optimize.style_targets(model, optimize.prepare_styles([painting], 64, 1.0, "cpu"), settings.style_layers)
    source = frames_of(CLIP)
    cached = {t: flow.reliable_flow(source[t], source[t + 1]) for t in range(0, 11, 2)}
    asked = []

    def cached_flow(t):
        asked.append(t)
        return cached.get(t)

    computed = []
    original = flow.reliable_flow
    monkeypatch.setattr(flow, "reliable_flow", lambda *a: computed.append(1) or original(*a))
    monkeypatch.setattr(optimize, "build_model", lambda *a, **k: pytest.fail("the given model must be reused"))
    monkeypatch.setattr(optimize, "style_targets", lambda *a, **k: pytest.fail("the given Grams must be reused"))
    given = evaluate(CLIP, CLIP, settings=settings, model=model, flows=cached_flow, long_range=(),
                            grams={name: g.numpy() for name, g in grams.items()}, device="cpu")
    assert sorted(asked) == list(range(11)) and len(computed) == 11 - len(cached)
    monkeypatch.undo()
    rebuilt = evaluate(CLIP, CLIP, styles=[painting], weights=random_vgg, settings=settings, long_range=())
    assert given.style_loss == pytest.approx(rebuilt.style_loss, rel=1e-5) and given.content_loss == 0
    assert given.warping_error == pytest.approx(rebuilt.warping_error, rel=1e-6)


def test_seam_pairs_against_the_median(tmp_path):
    source = frames_of(CLIP)
    # two chains meeting at frame 6: the second half a different picture of the same motion
    output = source[:6] + [np.clip(0.6 * f + 90, 0, 255).astype(np.uint8) for f in source[6:]]
    scores = evaluate(encoded(output, tmp_path / "seam.mp4"), CLIP, seams=[6, 9], long_range=())
    assert [s["frame"] for s in scores.seams] == [6, 9]
    seam, quiet = scores.seams
    assert seam["warping_error"] == scores.per_frame[5]["warping_error"]
    assert seam["ratio"] > 5 and quiet["ratio"] < 2 and scores.worst_seam_ratio == seam["ratio"]
    assert scores.median_pair_error == pytest.approx(np.median([r["warping_error"] for r in scores.per_frame[:-1]]))
    with pytest.raises(InputError, match="1 ≤ s < 12"):
        evaluate(CLIP, CLIP, seams=[0])
    with pytest.raises(InputError, match="seam frames \\[12\\]"):
        evaluate(CLIP, CLIP, seams=[12])


def test_flow_methods_threads_and_bad_options():
    one = evaluate(CLIP, CLIP, threads=1, long_range=(5,))
    three = evaluate(CLIP, CLIP, threads=3, long_range=(5,))
    assert one.per_frame == three.per_frame
    farneback = evaluate(CLIP, CLIP, flow_method="farneback", long_range=(5,))
    assert farneback.flow_method == "farneback" and farneback.long_range_flow == "composed"
    assert 0 < farneback.warping_error < 5 * one.warping_error
    with pytest.raises(InputError, match="dis, farneback"):
        evaluate(CLIP, CLIP, flow_method="raft")
    with pytest.raises(InputError, match="auto, direct, composed"):
        evaluate(CLIP, CLIP, long_range_flow="both")


def test_user_flow_folder(tmp_path):
    source = frames_of(CLIP)
    for t in range(11):
        forward, _ = flow.reliable_flow(source[t], source[t + 1])
        flow.write_flo(tmp_path / flow.flow_file_names(t, t + 1)[0], flow.resize_flow(forward, 128, 72))
        flow.write_flo(tmp_path / flow.flow_file_names(t + 1, t)[0],
                       flow.resize_flow(flow.optical_flow(source[t + 1], source[t]), 128, 72))
    given = evaluate(CLIP, CLIP, flows=flow.flow_dir_provider(tmp_path, 64, 36), long_range=())
    computed = evaluate(CLIP, CLIP, long_range=())
    assert given.warping_error == pytest.approx(computed.warping_error, rel=0.3)
    (tmp_path / "forward_4_5.flo").unlink()
    with pytest.raises(InputError, match="forward_4_5.flo"):
        evaluate(CLIP, CLIP, flows=flow.flow_dir_provider(tmp_path, 64, 36))


def test_report_files_and_frame_mismatch(tmp_path, random_vgg, painting):
    evaluation = evaluate(CLIP, CLIP, styles=[painting], weights=random_vgg, settings=SHALLOW, seams=[4])
    write_report(evaluation, CLIP, CLIP, tmp_path / "report")
    folder = tmp_path / "report"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["contact_sheet.png", "content_loss.svg", "evaluation.json", "long_range_warping_error.svg",
                     "side_by_side.mp4", "style_loss.svg", "warping_error.svg"]
    saved = json.loads((folder / "evaluation.json").read_text())
    assert saved["seams"][0]["frame"] == 4 and set(saved["long_range_warping_error"]) == {"5", "10"}
    assert saved["source_warping_error"] == evaluation.source_warping_error and saved["seconds"] > 0
    chart = (folder / "warping_error.svg").read_text()
    assert chart.count('class="mark"') == 1 and chart.count("<polyline") == 2  # the seam; output and source
    sheet = images.load_image(folder / "contact_sheet.png")
    assert sheet.shape[1] == 6 * 64 and sheet.shape[0] > 2 * 36  # six frames, source above stylized, labelled
    assert video.probe(folder / "side_by_side.mp4").width == 128
    short = video.encode(video.decode(video.probe(CLIP), 64, 36), tmp_path / "short.mp4", 64, 36, video.probe(CLIP).fps)
    with pytest.raises(InputError):
        evaluate(short, DATA / "bikes_cut.mp4")


def test_summary_holds_every_number():
    summary = evaluate(CLIP, CLIP, seams=[3]).summary()
    assert {"warping_error", "source_warping_error", "warping_error_k5", "warping_error_k10",
            "source_warping_error_k10", "median_pair_error", "worst_seam_ratio", "seams", "content_loss"} <= set(summary)
    assert summary["seams"][0]["frame"] == 3 and json.dumps(summary)


def test_evaluate_cli_json(tmp_path, capsys):
    assert main(["evaluate", str(CLIP), "--source", str(CLIP), "--style", str(SAMPLES / "starry_night.jpg"),
                 "--weights", "random", "--json", "--report-dir", str(tmp_path / "r")]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert {"frames", "warping_error", "content_loss", "style_loss"} <= set(numbers) and numbers["frames"] == 12
    assert (tmp_path / "r" / "warping_error.svg").exists()
    assert (tmp_path / "r" / "long_range_warping_error.svg").exists()


def test_evaluate_job_scores_with_the_jobs_own_settings(tmp_path, capsys):
    """`evaluate --job` takes the job's layers, pooling and artworks, not the defaults."""
    out = tmp_path / "out.mp4"
    assert main(["video", str(CLIP), str(SAMPLES / "starry_night.jpg"), "-o", str(out), "--executor", "local",
                 "--weights", "random", "--size", "32", "--iters", "2", "--content-weight", "1", "--style-weight",
                 "1e3", "--style-layers", "relu1_1", "--content-layers", "relu2_1", "--init", "content",
                 "--no-report", "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--source", str(CLIP), "--job", str(tmp_path / "out.job"), "--weights",
                 "random", "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(out), "--source", str(CLIP), "--style", str(SAMPLES / "starry_night.jpg"),
                 "--weights", "random", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert own["content_loss"] != pytest.approx(default["content_loss"])  # relu2_1, not relu4_2
    assert main(["evaluate", str(out), "--source", str(CLIP), "--job", str(tmp_path / "out.job"), "--weights",
                 "random-vgg16", "--json"]) == 2
    assert "not the weights the job rendered with" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--source", str(CLIP), "--job", str(tmp_path / "nope"), "--json"]) == 2
    assert "is not a ray-style job directory" in capsys.readouterr().err
