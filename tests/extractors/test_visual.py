import numpy as np
import pytest
import skimage.data
import torch

from workers.extractors.media import sample_frames
from workers.extractors.visual import (
    VISUAL_DIM,
    Conv2dSame,
    EfficientNetLite0,
    default_visual_weights_path,
)

# ImageNet-1k class ids.
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
CUP = 968


def test_state_dict_keys_match_weights_file():
    weights = torch.load(default_visual_weights_path(), map_location="cpu", weights_only=True)

    model_keys = set(EfficientNetLite0().state_dict())

    assert model_keys == set(weights)


def test_state_dict_shapes_match_weights_file():
    weights = torch.load(default_visual_weights_path(), map_location="cpu", weights_only=True)

    shapes = {key: tuple(value.shape) for key, value in EfficientNetLite0().state_dict().items()}

    assert shapes == {key: tuple(value.shape) for key, value in weights.items()}


def test_classify_chelsea_top1_is_a_cat(visual_embedder):
    # skimage.data.chelsea() is a photo of a tabby cat.
    logits = visual_embedder.classify(skimage.data.chelsea())

    assert int(np.argmax(logits)) in CAT_CLASSES


def test_classify_chelsea_top5_are_mostly_cats(visual_embedder):
    logits = visual_embedder.classify(skimage.data.chelsea())

    top5 = set(np.argsort(logits)[::-1][:5].tolist())

    assert len(top5 & CAT_CLASSES) >= 3


def test_classify_coffee_top1_is_espresso(visual_embedder):
    # skimage.data.coffee() is a cup of espresso on a saucer.
    logits = visual_embedder.classify(skimage.data.coffee())

    assert int(np.argmax(logits)) == ESPRESSO


def test_classify_coffee_top5_has_cup(visual_embedder):
    logits = visual_embedder.classify(skimage.data.coffee())

    assert CUP in np.argsort(logits)[::-1][:5].tolist()


def test_classify_returns_1000_finite_logits(visual_embedder):
    logits = visual_embedder.classify(skimage.data.coffee())

    assert logits.shape == (1000,)
    assert np.isfinite(logits).all()


def test_embed_shape_and_dtype(visual_embedder):
    frames = [skimage.data.chelsea()[:224, :224], skimage.data.coffee()[:224, :224]]

    vector = visual_embedder.embed(frames)

    assert vector.shape == (VISUAL_DIM,)
    assert vector.dtype == np.float32
    assert np.isfinite(vector).all()


def test_embed_is_mean_of_single_frame_embeddings(visual_embedder):
    first = skimage.data.chelsea()
    second = skimage.data.coffee()

    together = visual_embedder.embed([first, second])
    separate = (visual_embedder.embed([first]) + visual_embedder.embed([second])) / 2

    np.testing.assert_allclose(together, separate, rtol=1e-4, atol=1e-5)


def test_embed_features_are_non_negative(visual_embedder):
    # The pooled features follow ReLU6, so they lie in [0, 6].
    vector = visual_embedder.embed([skimage.data.astronaut()])

    assert vector.min() >= 0.0
    assert vector.max() <= 6.0


def test_embed_rejects_empty_list(visual_embedder):
    with pytest.raises(ValueError):
        visual_embedder.embed([])


def test_embed_rejects_grayscale_image(visual_embedder):
    with pytest.raises(ValueError, match="RGB"):
        visual_embedder.embed([skimage.data.camera()])


def test_embed_accepts_more_frames_than_one_batch(visual_embedder):
    # 17 frames: one batch of 16 and one of 1.
    frames = [np.full((224, 224, 3), value, dtype=np.uint8) for value in range(0, 255, 15)]

    vector = visual_embedder.embed(frames)

    assert vector.shape == (VISUAL_DIM,)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(224, 3, 2, 112), (225, 3, 2, 113), (7, 5, 1, 7), (28, 5, 2, 14), (1, 3, 2, 1)],
)
def test_same_padding_output_size(size, kernel, stride, expected):
    conv = Conv2dSame(1, 1, kernel, stride=stride, bias=False)

    output = conv(torch.zeros(1, 1, size, size))

    assert tuple(output.shape[-2:]) == (expected, expected)


def test_same_padding_puts_odd_pixel_after():
    # A 3x3 stride-2 kernel on a 4-pixel input needs 1 pixel of padding. TensorFlow
    # puts it after the input, so the kernel's top-left tap reads input pixel (0, 0)
    # (value 1), where symmetric padding would read a padded zero.
    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
    image = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)

    output = conv(image)

    assert output[0, 0, 0, 0].item() == 1.0


def test_embed_real_clips_nearest_is_same_scene(clips, visual_embedder):
    # Two clips each of drumming and of fireworks: each clip's visual embedding is
    # closest to the other clip of its kind.
    clip_ids = ["vas-drum-1", "vas-drum-2", "vas-fireworks-1", "vas-fireworks-2"]
    vectors = np.array(
        [visual_embedder.embed(sample_frames(clips[clip_id]["path"], count=4, size=224)) for clip_id in clip_ids]
    )
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -1.0)

    nearest = [clip_ids[index] for index in similarity.argmax(axis=1)]

    assert nearest == ["vas-drum-2", "vas-drum-1", "vas-fireworks-2", "vas-fireworks-1"]
