"""benchmarks/gpu.py at tiny sizes on a CPU: every code path a GPU run takes, so the one H100
run it is written for does not fail on a typo."""
import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import gpu

ROOT = gpu.ROOT


def test_fast_sections_run_and_render(capsys, tmp_path):
    assert gpu.main(["--device", "cpu", "--quick", "--no-write", "--only", "ceilings,kernels,optimizer",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "gpu.md").read_text().strip() == out[out.index(gpu.BEGIN):].strip()
    assert gpu.render_markdown(json.loads((tmp_path / "gpu.json").read_text())) in out
    assert "### Ceilings" in out and "### Pooling and Gram kernels" in out and "### The optimizer alone" in out
    assert "failed:" not in out and "**Random weights**" in out
    for algebra in ("splitk", "bmm", "loop"):
        assert f"| {algebra} |" in out


@pytest.mark.slow
def test_quick_run_covers_every_section_on_a_cpu(capsys):
    assert gpu.main(["--device", "cpu", "--quick", "--no-write"]) == 0
    out = capsys.readouterr().out
    for title in ("Ceilings", "One evaluation", "A whole frame", "The optimizer alone", "Frames per optimization",
                  "Exact tiling (one evaluation, whole and in tiles)"):
        assert f"### {title}" in out
    assert "failed:" not in out and "time budget" not in out
    assert "torch.optim.LBFGS" in out and "First compiled call in a new process" in out
    assert "### The sample job end to end" in out or "### job\n\nskipped: no ffmpeg" in out


def test_weights_travel_as_fp16_npz(tmp_path):
    path = tmp_path / "vgg16.npz"
    size = gpu.export_weights("random-vgg16", path)
    assert 25e6 < size < 33e6  # 14.7 M parameters in fp16: fits the 64 MiB a GPU box is sent
    weights = gpu.npz_weights(path)
    original = gpu.load_weights("random-vgg16")
    assert weights.arch == "vgg16" and weights.preprocess == original.preprocess and len(weights.convs) == 13
    for (w, b), (w0, b0) in zip(weights.convs, original.convs):
        assert w.dtype == np.float32 and w.shape == w0.shape
        np.testing.assert_allclose(w, w0, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(b, b0, atol=1e-4)


def test_the_gpu_block_replaces_only_itself(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n\n<!-- suite:begin -->\nsuite\n<!-- suite:end -->\n")
    results = {"machine": {"date": "2026-11-26", "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3",
                           "torch": "2.11.0", "python": "3.11"}, "weights": "random:seed=0", "seconds": 200.0,
               "command": "python -m benchmarks.gpu",
               "sections": {"ceilings": {"matmul_n": 8192, "matmul_dtype": "bfloat16", "matmul_tflops": 754.0,
                                         "copy_mib": 1024, "copy_gb_s": 2900.0},
                            "job": {"skipped": "no ffmpeg here"}}}
    gpu.write_block(gpu.render_markdown(results), path)
    results["sections"]["ceilings"]["matmul_tflops"] = 700.0
    gpu.write_block(gpu.render_markdown(results), path)
    text = path.read_text()
    assert text.count(gpu.BEGIN) == 1 and "700.0 TFLOP/s" in text and "754.0" not in text
    assert "intro" in text and "<!-- suite:begin -->\nsuite\n<!-- suite:end -->" in text
    assert "skipped: no ffmpeg here" in text and "**Random weights**" in text


def test_the_benchmark_imports_without_ray_or_ffmpeg():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('imageio_ffmpeg', 'ray'): raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import benchmarks.gpu\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_unknown_section_is_refused(capsys):
    assert gpu.main(["--device", "cpu", "--only", "evals,warp", "--no-write"]) == 2
    assert "unknown section(s) warp" in capsys.readouterr().err
