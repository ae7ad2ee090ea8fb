import json

import pytest

from ray_style.batch import read_spec, run_batch
from ray_style.cli import main
from ray_style.errors import InputError
from tests.conftest import DATA, SAMPLES

TOML = f"""
[defaults]
weights = "random"
size = 32
iters = 4
content_weight = 1.0
style_weight = 1000.0
segment_length = 12

[[job]]
input = "{DATA / 'bunny_12f.mp4'}"
styles = ["{SAMPLES / 'starry_night.jpg'}"]
output = "single.mp4"
iters = 3

[matrix]
inputs = ["{DATA / 'bunny_12f.mp4'}"]
styles = ["{SAMPLES / 'starry_night.jpg'}", "{SAMPLES / 'chelsea.png'}"]
output = "out_{{input}}_{{style}}.mp4"
"""


def test_spec_expands_jobs_and_matrix(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(TOML)
    jobs = read_spec(spec)
    assert [j.output.name for j in jobs] == ["single.mp4", "out_bunny_12f_starry_night.mp4", "out_bunny_12f_chelsea.mp4"]
    assert jobs[0].settings.style.iters == 3 and jobs[1].settings.style.iters == 4
    assert jobs[0].weights == "random" and jobs[0].output.parent == tmp_path


def test_yaml_spec_and_errors(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"job": [{"input": "a.mp4", "styles": ["s.jpg"], "output": "o.mp4", "itres": 3}]}))
    with pytest.raises(InputError, match="unknown option 'itres'. Did you mean 'iters'"):
        read_spec(spec)
    spec.write_text(json.dumps({"job": [{"input": "a.mp4", "styles": ["s.jpg"], "output": "o.mp4"},
                                        {"input": "b.mp4", "styles": ["s.jpg"], "output": "o.mp4"}]}))
    with pytest.raises(InputError, match="same output"):
        read_spec(spec)
    spec.write_text("job: [")
    with pytest.raises(InputError, match="cannot parse"):
        read_spec(spec)


def test_batch_runs_every_job_and_reports_failures(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(TOML + f"""
[[job]]
input = "{tmp_path / 'missing.mp4'}"
styles = ["{SAMPLES / 'starry_night.jpg'}"]
output = "broken.mp4"
""")
    assert main(["batch", str(spec), "--executor", "local", "-q"]) == 1
    out = capsys.readouterr().out
    assert "batch: 3 of 4 jobs done" in out and "FAIL" in out and "video not found" in out
    assert all((tmp_path / name).exists() for name in ("single.mp4", "out_bunny_12f_chelsea.mp4"))
    good = [job for job in read_spec(spec) if job.output.name != "broken.mp4"]
    outcomes = run_batch(good, executor="local")  # re-run: everything resumes
    assert all(o.ok and o.rendered == 0 for o in outcomes), [(o.ok, o.rendered, o.detail) for o in outcomes]


@pytest.mark.ray
@pytest.mark.slow
def test_ray_batch_reuses_the_pool(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(TOML)
    outcomes = run_batch(read_spec(spec), workers=2, threads=1)
    assert [o.ok for o in outcomes] == [True, True, True]
    workers = [{json.loads(line)["worker"] for line in (o.job.output.with_suffix(".job") / "frames.jsonl")
                .read_text().splitlines()} for o in outcomes]
    assert workers[0] | workers[1] | workers[2] <= workers[0] | workers[1]  # the same actors served every job
    assert len(workers[0] | workers[1] | workers[2]) <= 2
