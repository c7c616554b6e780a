"""The learning-rate range test as a picture (dlrun-lr-find): the loss against the lr on a log
axis, each step's loss in grey and the smoothed loss in blue, the suggested lr marked in red.
Drawn with Pillow, as the confusion matrix is, so neither needs matplotlib."""

import math
from typing import Optional

from PIL import Image, ImageDraw, ImageFont

WHITE, INK, GREY, LIGHT = (255, 255, 255), (20, 20, 20), (170, 170, 170), (230, 230, 230)
BLUE, RED = (31, 119, 180), (214, 39, 40)
WIDTH, HEIGHT = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50


def lr_figure(
    lrs: list[float], losses: list[float], smoothed: list[float], suggested: Optional[float]
) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), WHITE)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    draw.text((LEFT, 12), "lr range test: training loss against learning rate", font=font, fill=INK)
    draw.text((WIDTH - RIGHT - 220, 12), "grey: each step, blue: smoothed", font=font, fill=INK)
    if len(lrs) < 2:
        draw.text((LEFT, TOP + 20), "too few steps to draw", font=font, fill=INK)
        return image
    x_low, x_high = math.log10(lrs[0]), math.log10(lrs[-1])
    # the y range follows the smoothed curve: the first steps' raw losses would flatten it
    y_low, y_high = min(smoothed), max(smoothed[0], min(max(losses), 2 * smoothed[0]))
    y_high = y_high if y_high > y_low else y_low + 1.0

    def point(lr: float, loss: float) -> tuple[float, float]:
        x = LEFT + (math.log10(lr) - x_low) / (x_high - x_low) * (WIDTH - LEFT - RIGHT)
        share = (min(max(loss, y_low), y_high) - y_low) / (y_high - y_low)
        return x, HEIGHT - BOTTOM - share * (HEIGHT - TOP - BOTTOM)

    _axes(draw, font, x_low, x_high, y_low, y_high, point)
    draw.line([point(lr, loss) for lr, loss in zip(lrs, losses)], fill=GREY, width=1)
    draw.line([point(lr, loss) for lr, loss in zip(lrs, smoothed)], fill=BLUE, width=2)
    if suggested is not None:
        x = point(suggested, y_low)[0]
        draw.line([(x, TOP), (x, HEIGHT - BOTTOM)], fill=RED, width=2)
        draw.text((x + 5, TOP + 2), f"suggested {suggested:.3g}", font=font, fill=RED)
    return image


def _axes(draw, font, x_low, x_high, y_low, y_high, point) -> None:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    draw.rectangle([(LEFT, TOP), (right, bottom)], outline=INK)
    for decade in range(math.ceil(x_low), math.floor(x_high) + 1):
        x = point(10.0**decade, y_low)[0]
        draw.line([(x, TOP), (x, bottom)], fill=LIGHT)
        draw.text((x - 14, bottom + 6), f"1e{decade}", font=font, fill=INK)
    for tick in range(5):
        loss = y_low + (y_high - y_low) * tick / 4
        y = point(10.0**x_low, loss)[1]
        draw.line([(LEFT, y), (right, y)], fill=LIGHT)
        draw.text((8, y - 7), f"{loss:.3g}", font=font, fill=INK)
    draw.text(((LEFT + right) // 2 - 60, bottom + 26), "learning rate (log scale)", font=font, fill=INK)
