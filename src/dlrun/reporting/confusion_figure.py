"""The confusion matrix as a picture a person reads: class names on both axes, the count in each
cell, cells coloured by the share of their true class, and a colour scale. Drawn with Pillow
(torchvision's own dependency), so TensorBoard shows it as an image without matplotlib."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

WHITE, INK, GREY = (255, 255, 255), (20, 20, 20), (110, 110, 110)
MARGIN = 10
TITLE = "confusion matrix (validation): rows true, columns predicted"


def confusion_figure(confusion: Tensor, names: list[str]) -> Image.Image:
    """Rows are true classes, columns predicted ones; an RGB picture."""
    counts = confusion.long().cpu()
    shares = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    classes = len(names)
    cell = 44 if classes <= 10 else 30
    font = ImageFont.load_default(size=13 if classes <= 10 else 11)
    label_width = max(_width(font, name) for name in names)
    left, top = MARGIN + 18 + label_width + 6, MARGIN + 24
    side = cell * classes
    # a few classes make a matrix narrower than its title: the picture takes the wider of the two
    width = max(left + side + 70, left + _width(font, TITLE) + MARGIN)
    height = top + side + 6 + label_width + 24
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((left, MARGIN), TITLE, font=font, fill=INK)
    for row in range(classes):
        for column in range(classes):
            share = float(shares[row, column])
            box = (left + column * cell, top + row * cell, left + (column + 1) * cell, top + (row + 1) * cell)
            draw.rectangle(box, fill=_colour(share), outline=(225, 225, 225))
            if counts[row, column]:
                text = str(int(counts[row, column]))
                _centred(draw, box, text, font, WHITE if share > 0.5 else INK)
        _right_aligned(draw, left - 6, top + row * cell + cell // 2, names[row], font)
    _column_labels(image, names, font, left, top + side + 6, cell)
    _axis_titles(image, draw, font, left, top, side, height)
    _colour_scale(image, draw, font, left + side + 14, top, side)
    return image


def _colour(share: float) -> tuple[int, int, int]:
    """White for none of the row's samples, deep blue for all of them."""
    return (round(255 - 222 * share), round(255 - 160 * share), round(255 - 75 * share))


def _width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return right - left


def _centred(draw, box, text: str, font, fill) -> None:
    x0, y0, x1, y1 = box
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, font=font, fill=fill, anchor="mm")


def _right_aligned(draw, x: int, y: int, text: str, font) -> None:
    draw.text((x, y), text, font=font, fill=INK, anchor="rm")


def _column_labels(image, names: list[str], font, left: int, top: int, cell: int) -> None:
    """Predicted class names under the columns, written upwards so long names fit."""
    for column, name in enumerate(names):
        label = Image.new("RGB", (_width(font, name) + 2, cell), WHITE)
        ImageDraw.Draw(label).text((0, cell // 2), name, font=font, fill=INK, anchor="lm")
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (left + column * cell, top))


def _axis_titles(image, draw, font, left: int, top: int, side: int, height: int) -> None:
    draw.text((left + side // 2, height - MARGIN), "predicted", font=font, fill=GREY, anchor="ms")
    title = Image.new("RGB", (_width(font, "true") + 4, 18), WHITE)
    ImageDraw.Draw(title).text((2, 9), "true", font=font, fill=GREY, anchor="lm")
    rotated = title.rotate(90, expand=True)
    image.paste(rotated, (MARGIN, top + side // 2 - rotated.height // 2))


def _colour_scale(image, draw, font, x: int, top: int, side: int) -> None:
    """A bar from 100 % of the true class (top) to 0 % (bottom)."""
    shares = np.linspace(1.0, 0.0, side)[:, None]
    colours = 255 - np.array([222, 160, 75]) * shares  # _colour, for a whole column at once
    bar = np.repeat(np.round(colours).astype(np.uint8)[:, None, :], 13, axis=1)
    image.paste(Image.fromarray(bar), (x, top))
    draw.rectangle((x, top, x + 12, top + side - 1), outline=GREY)
    for share, y in ((1.0, top), (0.5, top + side // 2), (0.0, top + side - 1)):
        draw.text((x + 16, y), f"{share:.0%}", font=font, fill=GREY, anchor="lm")
