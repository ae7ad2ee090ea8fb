import numpy as np
import pytest

from ray_style import reconstruct
from ray_style.settings import StyleSettings


def test_grid_layout_with_random_weights(random_vgg, photo, painting):
    settings = StyleSettings(size=32, iters=3)
    content, style = reconstruct.reconstruct(photo, painting, settings, random_vgg)
    assert [r.layers for r in content] == [(layer,) for layer in reconstruct.BLOCK_LAYERS]
    assert [len(r.layers) for r in style] == [1, 2, 3, 4, 5]
    grid = reconstruct.figure(photo, painting, content, style)
    tile_h, tile_w = content[0].image.shape[:2]
    assert grid.shape[1] >= 6 * tile_w and grid.shape[0] >= 2 * tile_h and grid.dtype == np.uint8


@pytest.mark.weights
@pytest.mark.slow
def test_real_features_lose_detail_with_depth_and_match_style(real_vgg, photo, painting):
    settings = StyleSettings(size=64, iters=60)
    content, style = reconstruct.reconstruct(photo, painting, settings, real_vgg)
    errors = [r.pixel_rmse for r in content]
    assert errors[0] < errors[2] < errors[4], errors  # the seed's figure: detail lost with depth
    assert errors[0] < 25
    for r in style:
        assert r.style_loss < 0.1 * r.noise_style_loss, (r.label, r.style_loss, r.noise_style_loss)
