"""The one image preprocessing of the whole product.

Training, calibration (the representative data of int8 quantisation), evaluation and the
detection pictures all call `preprocess`, so the network never sees an image prepared two
different ways.

The MobileDet input contract (the TFOD `ssd_mobiledet_*` pipelines):

* decode to RGB, 8 bits per channel;
* `fixed_shape_resizer`: bilinear resize to `size x size`, aspect ratio NOT preserved;
* scale pixels to [-1, 1] with `(2 / 255) * x - 1`.

Boxes: the detector works in normalised coordinates (fractions of the image height and width).
A fixed-shape resize stretches the whole image, and a box's fractions stay the same under a
stretch, so annotation boxes need no change when the image is resized. The only thing to take
care of is to normalise the COCO pixel boxes by the ORIGINAL image size (the size in the image
record), which `include.data.coco.CocoDataset.targets` does.

Implementation choice: the resize is Pillow's bilinear filter applied to the uint8 image, in
numpy/Pillow only, so calibration and evaluation do not need TensorFlow and the result is the same
on every machine. The resized image is kept as whole numbers 0..255 (uint8 precision): then a
quantised model whose input is uint8 with scale 2/255 and zero point 128 sees exactly the pixels the
float model sees; `preprocess_uint8` gives those pixels directly. Pillow's bilinear filter widens
its support when it shrinks an image (it antialiases), which TensorFlow's default
`tf.image.resize(..., antialias=False)` does not; the two differ by a few grey levels on
downscaled images. Everything in this product goes through this module, so that difference never
reaches a comparison between two of our own models.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from include.errors import DataError

ImageLike = Union[np.ndarray, str, os.PathLike]

# The largest image decoded (an 8K frame is 33 Mpx): each is resized to the model's input, but a
# 20000 x 20000 PNG would take 1.2 GB decoded and about 4 GB on its way through evaluation.
# Checked from the header before decoding (`load_image`, the project's one decoder), which names
# the image's size in its error; Pillow's own bomb check would refuse at open without it.
MAX_DECODED_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode a PNG or JPEG (or anything Pillow reads) into a uint8 H x W x 3 RGB array.

    Grayscale (L, 1), palette (P, PA), RGBA / LA (alpha dropped, as `tf.image.decode_image(...,
    channels=3)` does), CMYK and 16-bit images all come back as 8-bit RGB.

    EXIF orientation is deliberately NOT applied: COCO annotations (and TFOD's decoder) refer to
    the raw pixel grid as stored in the file, so rotating the image would move it away from its
    boxes.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("image file not found." if not p.exists() else "is not a file.",
                        where=str(p),
                        fix="check the image folder and the image record's file_name; "
                            "`CocoDataset.check_files()` lists every missing image.")
    try:
        with Image.open(p) as img:
            w, h = img.size   # from the header: nothing decoded yet
            if w * h > MAX_DECODED_PIXELS:
                raise DataError(
                    f"the image is {w} x {h} ({w * h / 1e6:.0f} Mpx), more than the "
                    f"{MAX_DECODED_PIXELS / 1e6:.0f} Mpx this pipeline decodes per image (it "
                    "would take several GB of memory).", where=str(p),
                    fix="downscale the image (and its boxes) or remove its image record and "
                        "annotations from the annotation file.")
            img.load()  # decode now, inside the try: truncated files fail here
            return _to_rgb_array(img)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"image will not decode ({type(exc).__name__}: {exc}).", where=str(p),
                        fix="replace the file with a valid PNG or JPEG, or remove its image "
                            "record and annotations from the annotation file.") from exc


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale: map 0..65535 onto 0..255 (65535 / 255 = 257 exactly).
        a = np.asarray(img).astype(np.float64)
        gray = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA", "P"):
        # Palette images may carry transparency; go through RGBA and drop alpha like TF does.
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy, independent of the Pillow image


def as_rgb_uint8(image: np.ndarray, where: str = "image array") -> np.ndarray:
    """Check an in-memory image and bring it to uint8 H x W x 3 (gray -> RGB, alpha dropped)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise DataError(f"expected a uint8 image, got dtype {a.dtype}.", where=where,
                        fix="pass the uint8 pixels from `load_image` (not already preprocessed "
                            "floats), or a path to the image file.")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"expected an H x W x 3 image, got shape {tuple(np.asarray(image).shape)}.",
                        where=where, fix="pass an RGB image (H x W x 3), grayscale (H x W) or "
                                         "RGBA (H x W x 4) array.")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return a


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) < 1:
        raise DataError(f"the resize target must be a positive whole number, got {size!r}.",
                        where="size", fix="pass the model's input size, e.g. 320.")
    return int(size)


def resize_uint8(image_uint8: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize to size x size (aspect ratio not preserved), uint8 in, uint8 out."""
    size = _check_size(size)
    a = as_rgb_uint8(image_uint8)
    if a.shape[0] == size and a.shape[1] == size:
        return a.copy()  # never hand back the caller's own array
    img = Image.fromarray(np.ascontiguousarray(a), mode="RGB")
    return np.asarray(img.resize((size, size), resample=Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_image(image_uint8: np.ndarray, size: int) -> np.ndarray:
    """TFOD `fixed_shape_resizer`: float32 [size, size, 3] in pixel units [0, 255].

    Normalised boxes are unchanged by this resize (see the module docstring).
    """
    return resize_uint8(image_uint8, size).astype(np.float32)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """Pixel units [0, 255] -> the MobileDet input range [-1, 1]: (2 / 255) * x - 1."""
    x = np.asarray(pixels, dtype=np.float32)
    return x * np.float32(2.0 / 255.0) - np.float32(1.0)


def _image_of(image: ImageLike) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    return as_rgb_uint8(image)


def preprocess(image: ImageLike, size: int) -> np.ndarray:
    """The preprocessing: an image (uint8 array or a path) -> float32 [size, size, 3] in [-1, 1]."""
    return normalize(resize_image(_image_of(image), size))


def preprocess_uint8(image: ImageLike, size: int) -> np.ndarray:
    """The same resize as `preprocess`, kept as uint8 [size, size, 3] for uint8-input models.

    `normalize(preprocess_uint8(x, s)) == preprocess(x, s)` exactly.
    """
    return resize_uint8(_image_of(image), size)


def preprocess_batch(images: Iterable[ImageLike] | Sequence[ImageLike], size: int) -> np.ndarray:
    """`preprocess` over a list of images (arrays or paths): float32 [N, size, size, 3]."""
    size = _check_size(size)
    out = [preprocess(im, size) for im in images]
    if not out:
        return np.zeros((0, size, size, 3), dtype=np.float32)
    return np.stack(out, axis=0)
