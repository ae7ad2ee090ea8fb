"""The benchmark suite's arithmetic and its rewrite of BENCHMARKS.md (the runs themselves are benchmarks)."""
import pytest

from benchmarks import suite


def test_flop_count_of_one_vgg19_evaluation():
    # conv1_1: 2·H·W·3·64·9; the whole network to conv5_1 at 512² is ≈ 0.38 TFLOP per
    # evaluation, forward plus input gradient (see BENCHMARKS.md).
    assert suite.conv_flops("vgg19", 4, 4, deepest_block=1) == 2 * 16 * 3 * 64 * 9
    assert suite.eval_flops("vgg19", 512, 512) == pytest.approx(378.7e9, rel=1e-3)
    assert suite.eval_flops("vgg16", 512, 512) < suite.eval_flops("vgg19", 512, 512)


def test_suite_block_replaces_only_its_own_part(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nhand-written intro\n\n## Chaos\nkept\n")
    results = {"machine": {"date": "2026-11-25", "python": "3.11", "torch": "2.14.1", "cpu": "x86_64, 2 cores",
                           "threads": 2, "device": "cpu", "ray": "2.60.0"},
               "sections": {"batch": {"rows": [{"batch": 1, "size": 64, "evaluations": 30, "seconds": 3.0,
                                                "frames_per_s": 0.333, "vs_batch_1": 1.0}],
                                      "peak_host_rss_mib": 900}}}
    suite.write_benchmarks(suite.render_markdown(results, "python -m benchmarks.suite --only batch"), path)
    first = path.read_text()
    assert "hand-written intro" in first and "## Chaos\nkept" in first and "| 1 | 64² | 30 | 3.0 | 0.333 | 1.0 |" in first
    results["sections"]["batch"]["rows"][0]["seconds"] = 2.0
    suite.write_benchmarks(suite.render_markdown(results, "python -m benchmarks.suite --only batch"), path)
    second = path.read_text()
    assert second.count(suite.BEGIN) == 1 and "| 2.0 |" in second and "| 3.0 |" not in second
    assert "`python -m benchmarks.suite --only batch` — 2026-11-25" in second


def test_unknown_section_is_refused(capsys):
    assert suite.main(["--only", "evals,warp"]) == 2
    assert "unknown section(s) warp" in capsys.readouterr().err


def test_the_reappearing_region_is_found_and_scored(tmp_path):
    """A bar sweeps right over a still background: the pixels it uncovers were seen 5 frames
    earlier. An output that keeps the background still scores lower there than one that
    repaints it each frame."""
    import numpy as np

    from benchmarks.temporal import reappearing_sheet
    from ray_style import video

    rng = np.random.default_rng(0)
    from PIL import Image, ImageFilter

    def texture(height, width):
        noise = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        return np.asarray(noise.filter(ImageFilter.GaussianBlur(0.7)))

    background, bar = texture(64, 96), texture(64, 24)

    def frames(repaint):
        for t in range(10):
            image = (texture(64, 96) if repaint else background).copy()  # repainted: new each frame
            image[:, 2 * t + 16:2 * t + 40] = bar  # the occluder: a textured bar moving right
            yield image

    source = video.encode(frames(False), tmp_path / "source.mp4", 96, 64, 10)
    still = video.encode(frames(False), tmp_path / "still.mp4", 96, 64, 10)
    repainted = video.encode(frames(True), tmp_path / "repainted.mp4", 96, 64, 10)
    result = reappearing_sheet(source, {"still": still, "repainted": repainted}, tmp_path / "sheet.png")
    assert result["region_pixels"] > 0 and (tmp_path / "sheet.png").stat().st_size > 0
    assert result["region_error"]["still"] < result["region_error"]["repainted"]
