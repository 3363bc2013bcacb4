"""PNG plots as Markdown with the image inlined, for places that show Markdown but cannot open a file.

The Dagster UI renders Markdown metadata and lets ``data:`` URIs through as image
sources, so a plot inlined as base64 shows as a picture where a path would only show
text. Each materialization stores its metadata in the event log, so the inlined copy is
shrunk (at most ``MAX_WIDTH`` pixels wide, a small palette); the PNG file keeps full size.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

MAX_WIDTH = 420
# Plots are lines and bars on white: a small palette keeps them legible at a fraction of the bytes.
PALETTE_COLORS = 32


def png_data_uri(path: Path, max_width: int = MAX_WIDTH) -> str:
    """``data:image/png;base64,...`` of the PNG at ``path``, scaled down to ``max_width`` pixels wide."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"plot {path} does not exist")
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            image = image.convert("RGB")
    except UnidentifiedImageError as exc:
        raise ValueError(f"plot {path} is not an image: {exc}") from exc
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.quantize(colors=PALETTE_COLORS).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def plots_markdown(plots: dict[str, Path], max_width: int = MAX_WIDTH) -> str:
    """Each plot under its name as a heading, inlined; ``_none_`` when there is no plot."""
    if not plots:
        return "_none_"
    return "\n\n".join(
        f"**{name.replace('_', ' ')}**\n\n![{name}]({png_data_uri(path, max_width)})" for name, path in plots.items()
    )
