"""The benchmark suite's arithmetic and its rewrite of BENCHMARKS.md (the runs themselves are benchmarks)."""
import pytest

from benchmarks import suite


def test_flop_count_of_one_vgg19_evaluation():
    # conv1_1: 2·H·W·3·64·9; the whole network to conv5_1 at 512² is ≈ 0.38 TFLOP per
    # evaluation, forward plus input gradient (DESIGN.md §6).
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
