"""Lossless test images whose pixels name their own coordinates, so a view's position can be read back."""

import io

import numpy as np
import torch
from PIL import Image


def coord_png(w: int, h: int) -> bytes:
    """A lossless image whose pixel (x, y) holds R = x % 256, G = y % 256, B = 10*(x//256) + y//256."""
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    a = np.stack([x % 256, y % 256, 10 * (x // 256) + y // 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def origin(view: torch.Tensor) -> tuple[int, int]:
    """(x, y) of the source pixel at a view's top-left corner."""
    r, g, b = (int(v) for v in view[:, 0, 0])
    return r + 256 * (b // 10), g + 256 * (b % 10)
