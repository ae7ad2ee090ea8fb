import json

import pytest

from ray_style.batch import read_spec, run_batch
from ray_style.cli import main
from ray_style.errors import InputError
from ray_style.settings import ExecutorOptions
from tests.conftest import DATA, SAMPLES

TOML = f"""
[defaults]
weights = "random"
size = 32
iters = 4
content_weight = 1.0
style_weight = 1000.0
content_layers = ["relu2_1"]  # two VGG blocks: a third of the paper's evaluation
style_layers = ["relu1_1", "relu2_1"]
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
    assert jobs[0].settings.style.weights == "random" and jobs[0].output.path().parent == tmp_path


def test_yaml_spec_and_errors(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"job": [{"input": "a.mp4", "styles": ["s.jpg"], "output": "o.mp4", "itres": 3}]}))
    assert "unknown option 'itres'. Did you mean 'iters'" in read_spec(spec)[0].error
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
    outcomes = run_batch(good, ExecutorOptions(kind="local"))  # re-run: everything resumes
    assert all(o.ok and o.rendered == 0 for o in outcomes), [(o.ok, o.rendered, o.detail) for o in outcomes]


@pytest.mark.ray
@pytest.mark.slow
def test_ray_batch_reuses_the_pool(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(TOML)
    outcomes = run_batch(read_spec(spec), ExecutorOptions(max_workers=2, threads=1))
    assert [o.ok for o in outcomes] == [True, True, True]
    workers = [{json.loads(line)["worker"] for line in (o.job.output.path().with_suffix(".job") / "frames.jsonl")
                .read_text().splitlines()} for o in outcomes]
    assert workers[0] | workers[1] | workers[2] <= workers[0] | workers[1]  # the same actors served every job
    assert len(workers[0] | workers[1] | workers[2]) <= 2


@pytest.mark.parametrize("entry,message", [
    ({"size": "abc"}, "option 'size' expected a whole number, got 'abc'"),
    ({"size": 2.5}, "option 'size' must be a whole number, got 2.5"),
    ({"styles": 5}, "'styles' must be a path or a list of paths, got 5"),
    ({"input": 123}, "'input' must be a path or a list of paths, got 123"),
    ({"weights": 5}, "option 'weights' must be a string, got 5"),
    ({"content_weight": "many"}, "option 'content_weight' expected a number, got 'many'"),
    ({"temporal_weight": -1.0}, "'temporal_weight' must be a finite number ≥ 0"),
    ({"pooling": "mean"}, "unknown 'pooling' 'mean': use avg, max"),
    ({"long_term": 2, "init": "prev"}, "option 'long_term' must be a list, got 2"),
    ({"long_term": [2], "init": "prev"}, "'long_term' needs 'init' flow"),
])
def test_each_bad_job_is_reported_and_the_others_still_read(tmp_path, entry, message):
    spec = tmp_path / "spec.yaml"
    good = {"input": "a.mp4", "styles": ["s.jpg"], "output": "good.mp4"}
    spec.write_text(json.dumps({"job": [{**good, "output": "bad.mp4", **entry}, good]}))
    bad, fine = read_spec(spec)
    assert message in bad.error and fine.error is None


def test_matrix_inputs_may_be_one_string_and_templates_are_checked(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"matrix": {"inputs": "clip.mp4", "styles": "art.jpg", "output": "o_{input}.mp4"}}))
    jobs = read_spec(spec)
    assert [(j.input.name, [s.name for s in j.styles], j.output.name) for j in jobs] == [
        ("clip.mp4", ["art.jpg"], "o_clip.mp4")]  # one job, not one per character
    spec.write_text(json.dumps({"matrix": {"inputs": ["a.mp4"], "styles": ["s.jpg"], "output": "out/{foo}.mp4"}}))
    with pytest.raises(InputError, match=r"uses \{foo\}: only \{input\} and \{style\}"):
        read_spec(spec)


def test_a_batch_job_has_the_manifest_of_the_same_command_line_run(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
[[job]]
input = "{DATA / 'bunny_12f.mp4'}"
styles = ["{SAMPLES / 'starry_night.jpg'}"]
output = "batch.mp4"
weights = "random"
size = 32
iters = 3
init = "flow"
segment_length = 12
""")
    assert run_batch(read_spec(spec), ExecutorOptions(kind="local"))[0].ok
    assert main(["video", str(DATA / "bunny_12f.mp4"), str(SAMPLES / "starry_night.jpg"), "-o",
                 str(tmp_path / "cli.mp4"), "--weights", "random", "--size", "32", "--iters", "3", "--init", "flow",
                 "--segment-length", "12", "--executor", "local", "--no-report", "-q"]) == 0
    batch, cli = (json.loads((tmp_path / f"{name}.job" / "manifest.json").read_text()) for name in ("batch", "cli"))
    assert {k: v for k, v in batch.items() if k != "run"} == {k: v for k, v in cli.items() if k != "run"}


@pytest.mark.parametrize("options", [
    ExecutorOptions(kind="local", threads=2, frames_per_worker=3),
    pytest.param(ExecutorOptions(max_workers=2, threads=1), marks=[pytest.mark.ray, pytest.mark.slow]),
], ids=["local", "ray"])
def test_a_job_that_fails_mid_render_does_not_leak_into_the_next(tmp_path, options):
    """A failing job's frames still in flight must never be stored in the job after it."""
    spec = tmp_path / "spec.toml"
    common = f"""input = "{DATA / 'bunny_12f.mp4'}"
weights = "random"
size = 32
iters = 3
segment_length = 4
overlap = 1
"""
    spec.write_text(f"""
[[job]]
{common}styles = ["{SAMPLES / 'starry_night.jpg'}"]
output = "failing.mp4"
style_weight = 1e40
optimizer = "adam"

[[job]]
{common}styles = ["{SAMPLES / 'chelsea.png'}"]
output = "good.mp4"
""")
    failing, good = run_batch(read_spec(spec), options)
    assert not failing.ok and "failed 3 times" in failing.detail and good.ok
    alone = tmp_path / "alone"
    alone.mkdir()
    spec_alone = alone / "spec.toml"
    spec_alone.write_text(spec.read_text().split("[[job]]")[0] + "[[job]]" + spec.read_text().split("[[job]]")[2])
    (result,) = run_batch(read_spec(spec_alone), options)
    assert result.ok
    from tests.test_runner import frames_of

    assert frames_of(tmp_path / "good.job") == frames_of(alone / "good.job")


def test_a_nan_weight_in_toml_is_refused(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[[job]]\ninput = "a.mp4"\nstyles = ["s.jpg"]\noutput = "o.mp4"\ntv_weight = nan\n')
    assert "option 'tv_weight' must be a finite number, got nan" in read_spec(spec)[0].error


def test_a_templates_folder_is_made_and_every_job_is_checked_before_the_pool_starts(tmp_path, monkeypatch):
    """The docstring's example writes to out/{input}_{style}.mp4: the folder is the user's intent.
    A job that cannot run is known before any worker is asked for."""
    from ray_style import executor

    spec = tmp_path / "spec.toml"
    (tmp_path / "taken").write_text("a file where a folder should be")
    spec.write_text(TOML.split("[[job]]")[0] + f"""
[[job]]
input = "{tmp_path / 'missing.mp4'}"
styles = ["{SAMPLES / 'starry_night.jpg'}"]
output = "a.mp4"

[[job]]
input = "{DATA / 'bunny_12f.mp4'}"
styles = ["{tmp_path / 'no_such_art.jpg'}"]
output = "b.mp4"

[[job]]
input = "{DATA / 'bunny_12f.mp4'}"
styles = ["{SAMPLES / 'starry_night.jpg'}"]
output = "taken/c.mp4"
""")
    monkeypatch.setattr(executor, "make_executor", lambda *a, **k: pytest.fail("a pool was started"))
    outcomes = run_batch(read_spec(spec), ExecutorOptions(kind="local"))
    assert [o.ok for o in outcomes] == [False, False, False]
    assert "video not found" in outcomes[0].detail and "no_such_art.jpg" in outcomes[1].detail
    assert "the output's folder" in outcomes[2].detail and "taken is a file" in outcomes[2].detail
    assert not any(p.name.endswith(".job") for p in tmp_path.iterdir())  # nothing made for jobs that cannot run
    monkeypatch.undo()
    spec.write_text(TOML.split("[[job]]")[0] + f"""
[matrix]
inputs = ["{DATA / 'bunny_12f.mp4'}"]
styles = ["{SAMPLES / 'starry_night.jpg'}"]
output = "out/deeper/{{input}}_{{style}}.mp4"
""")
    (outcome,) = run_batch(read_spec(spec), ExecutorOptions(kind="local"))
    assert outcome.ok, outcome.detail
    assert (tmp_path / "out" / "deeper" / "bunny_12f_starry_night.mp4").is_file()
