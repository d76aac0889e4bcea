"""Real photographs as JPEG bytes for the decoding tests: scikit-image's wheel carries them, so no
download; resized to ImageNet-like sizes."""

import io

from PIL import Image

# ImageNet's typical sizes: landscape, portrait, 3:2, and one odd-sized
PHOTOS = [("astronaut", (470, 390)), ("coffee", (390, 470)), ("chelsea", (500, 333)), ("rocket", (470, 390))]


def photo_jpeg(photo: str, size: tuple[int, int], quality: int = 90, mode: str = "RGB", **save) -> bytes:
    """``photo`` (a scikit-image sample) resized to ``size`` and saved as a JPEG (``save``: PIL's
    options: ``subsampling``, ``progressive``...), in ``mode`` (``L`` for grayscale, ``CMYK``)."""
    from skimage import data as skdata

    buf = io.BytesIO()
    img = Image.fromarray(getattr(skdata, photo)()).convert("RGB").resize(size, Image.BICUBIC)
    img.convert(mode).save(buf, format="JPEG", quality=quality, **save)
    return buf.getvalue()
