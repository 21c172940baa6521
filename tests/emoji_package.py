"""A package shaped like ``emoji-datasource-google`` (``emoji.json`` and 64 px PNGs), drawn here: coloured
circles and squares, one subcategory per colour and shape, for tests of the code that reads the real one."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 160, 30), "yellow": (230, 210, 30)}
SHAPES = ("circle", "square")


def write_emoji_package(pkg: Path, count: int) -> Path:
    (pkg / "img" / "google" / "64").mkdir(parents=True)
    rows = []
    for n in range(count):
        colour, shape = list(COLOURS)[n % 4], SHAPES[(n // 4) % 2]
        img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        box = [8 + n % 5, 8, 56, 56 - n % 7]
        (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
        name = f"{n:03d}.png"
        img.save(pkg / "img" / "google" / "64" / name)
        rows.append({"name": f"{colour} {shape} {n}", "short_name": f"{shape}_{n}",
                     "category": "Shapes" if shape == "square" else "Symbols",
                     "subcategory": f"{colour}-{shape}", "image": name, "has_img_google": True})
    (pkg / "emoji.json").write_text(json.dumps(rows))
    return pkg
