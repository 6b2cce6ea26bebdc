"""Image files to uint8 tensors: decoded once, the short side resized, the centre square kept.

Decoding goes through torchvision.io (libjpeg-turbo / libpng / libwebp on CPU, nvjpeg on CUDA) rather than PIL:
no PIL image objects in the loader's hot path, and a batch of JPEG bytes decodes in one call on a GPU. PIL stays
as the fallback for formats torchvision does not read (BMP, TIFF, ...). Every failure becomes ``UnreadableImage``,
one line naming the file, even when raised inside a DataLoader worker.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as TF

from orchestra.errors import UserError


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec and warns on every call; the decoders are
    # what this module is for, and a warning per image would drown the run's log (a module-wide filter would not
    # survive pytest's or a caller's own warning filters).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        yield

FIX = "replace or delete the file, or set data.skip_bad_images=true to train on without it"


class UnreadableImage(UserError):
    """An image file that cannot be decoded. The message stays one line even when raised in a DataLoader worker."""

    def __init__(self, message: str) -> None:
        # DataLoader re-raises a worker's exception as type("Caught ... in DataLoader worker process N.\nOriginal
        # Traceback ..."), whose last line is "<module>.UnreadableImage: <our line>"; keep only our line.
        if "\n" in message:
            last = message.strip().splitlines()[-1]
            message = last.partition(f"{type(self).__name__}: ")[2] or last
        super().__init__(message)


def unreadable(path: str, err: BaseException) -> UnreadableImage:
    # torchvision's C++ errors start "decode_jpeg, /build/path/decode_jpeg.cpp:171, <reason>": keep the reason.
    reason = re.sub(r"^\w+, \S+:\d+, ", "", str(err).strip().splitlines()[0] if str(err).strip() else repr(err))
    return UnreadableImage(f"cannot read image {path} ({reason}); {FIX}")


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[C, H, W]`` -> ``[C, size, size]``: the centre square, resized with antialiasing.

    Cropping the square before resizing equals resizing the short side and then centre-cropping (up to the rounding of
    the crop offset), and resizes fewer pixels.
    """
    height, width = image.shape[-2:]
    side = min(height, width)
    if height != width:
        image = TF.center_crop(image, [side, side])
    if side != size:
        image = TF.resize(image, [size, size], antialias=True)
    return image


def _rgb(image: torch.Tensor) -> torch.Tensor:
    if image.dtype != torch.uint8:  # 16-bit PNGs decode to uint16
        image = TF.to_dtype(image, torch.uint8, scale=True)
    return image


def _pil_rgb(encoded: torch.Tensor, path: str) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded.numpy().tobytes())) as image:
            rgb = image.convert("RGB")  # convert decodes every pixel: a truncated file fails here, not later
    except Image.UnidentifiedImageError:
        raise unreadable(path, ValueError("not an image format torchvision or PIL reads")) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise unreadable(path, err) from None
    return TF.pil_to_tensor(rgb)


def decode_bytes(encoded: torch.Tensor, path: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """One file's bytes -> uint8 RGB ``[3, H, W]`` on ``device`` (full size)."""
    try:
        with _quiet():
            return _rgb(decode_image(encoded, mode=ImageReadMode.RGB)).to(device)
    except RuntimeError as err:
        if "Unsupported image file" not in str(err):
            raise unreadable(path, err) from None
    return _pil_rgb(encoded, path).to(device)  # a format torchvision does not read (BMP, TIFF, ...)


def read_encoded(path: str) -> torch.Tensor:
    """The file's bytes as a uint8 tensor (what ``decode_batch`` takes); an unreadable file is one line naming it."""
    try:
        with _quiet():
            return read_file(path)
    except (OSError, RuntimeError) as err:
        raise unreadable(path, err) from None


def decode_resized(path: str, size: int) -> torch.Tensor:
    """uint8 ``[3, size, size]``: the file decoded as RGB, its centre square resized to ``size`` (antialiased)."""
    return square(decode_bytes(read_encoded(path), path), size)


def decode_batch(encoded: list[torch.Tensor], size: int, device: torch.device | str = "cpu",
                 names: list[str] | None = None) -> torch.Tensor:
    """Files' bytes (``read_file``) -> uint8 ``[n, 3, size, size]`` on ``device``, equal to ``decode_resized`` per file.

    All JPEGs go to one ``decode_jpeg`` call (batched nvjpeg on CUDA); the crop and resize run on ``device``. When the
    batch call fails (one file is damaged or not a JPEG), each file is decoded on its own, so a damaged one is named
    (``names``, default its position) and other formats still load.
    """
    device = torch.device(device)
    names = names or [f"#{i} of the batch" for i in range(len(encoded))]
    if not encoded:
        return torch.empty(0, 3, size, size, dtype=torch.uint8, device=device)
    try:
        with _quiet():
            images = decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        images = [decode_bytes(data, name, device) for data, name in zip(encoded, names, strict=True)]
    return torch.stack([square(_rgb(image), size) for image in images])
