"""Generate realistic receipt images (Pillow) together with the truth about them.

A :class:`ReceiptSpec` is what a shop printed: merchant, address, date, line
items, tax, total and currency, in one of a few layouts (date formats, decimal
commas, where the total sits) and fonts. The fonts ship in packages (Source
Sans Pro, Source Serif Pro) or with Pillow (its built-in Aileron); nothing is
downloaded. ``noisy=True`` adds a slight skew, blur and speckles, as a phone
photo of a paper receipt would.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: (name printed on the receipt, how the bank statement spells the merchant).
MERCHANTS = (
    ("Green Grocer Market", "GREEN GROCER MARKET LONDON"),
    ("Cafe Aurora", "CAFE AURORA 0231"),
    ("Harbor Hardware", "HARBOR HARDWARE INC"),
    ("Blue Lantern Books", "SQ *BLUE LANTERN BOOKS"),
    ("Corner Pharmacy", "CORNER PHARMACY #12"),
    ("Sunrise Bakery", "SUNRISE BAKERY LTD"),
    ("Metro Fuel Station", "METRO FUEL STATION 44"),
    ("Pasta Fresca", "PASTA FRESCA RESTAURANT"),
    ("Northwind Electronics", "NORTHWIND ELECTRONICS"),
    ("Maple Leaf Diner", "MAPLE LEAF DINER"),
)
ITEMS = (
    "Milk 2L", "Bread", "Apples 1kg", "Coffee beans", "Espresso", "Croissant", "Screws M4",
    "Paint brush", "Notebook", "Paperback novel", "Vitamin C", "Bandages", "Unleaded",
    "Car wash", "Spaghetti", "Tiramisu", "USB cable", "Headphones", "Pancakes", "Orange juice",
    "Cheddar", "Tomatoes", "Olive oil", "Tea", "Muffin", "Batteries",
)  # fmt: skip
STREETS = ("High Street", "Main St", "Market Square", "Harbour Road", "Elm Avenue", "Kings Way")

#: Layouts: how the date and amounts are printed and what the total line says.
LAYOUTS = ("classic", "euro", "us")
#: Fonts: (label, package module or None for Pillow's own, file key in that package).
FONTS = (
    ("sans", "font_source_sans_pro", "SourceSansPro"),
    ("serif", "font_source_serif_pro", "SourceSerifPro"),
    ("pillow", None, None),
)
LAYOUT_CURRENCY = {"classic": ("GBP", "EUR"), "euro": ("EUR", "CHF"), "us": ("USD",)}


@dataclass(frozen=True)
class ReceiptSpec:
    """Everything printed on one receipt."""

    merchant: str
    bank_name: str
    address: str
    purchased_on: date
    currency: str
    items: tuple[tuple[str, Decimal], ...]
    tax: Decimal
    layout: str
    font: str

    @property
    def subtotal(self) -> Decimal:
        return sum((price for _, price in self.items), Decimal("0"))

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax


def random_receipt(
    rng: random.Random, *, today: date | None = None, layout: str | None = None
) -> ReceiptSpec:
    """A plausible receipt from the last 30 days."""
    merchant, bank_name = rng.choice(MERCHANTS)
    layout = layout or rng.choice(LAYOUTS)
    items = tuple(
        (name, Decimal(rng.randint(50, 4999)) / 100)
        for name in rng.sample(ITEMS, rng.randint(2, 6))
    )
    subtotal = sum((price for _, price in items), Decimal("0"))
    tax = (subtotal * Decimal("0.08")).quantize(Decimal("0.01")) if layout == "us" else Decimal(0)
    return ReceiptSpec(
        merchant=merchant,
        bank_name=bank_name,
        address=f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
        purchased_on=(today or date.today()) - timedelta(days=rng.randint(1, 30)),
        currency=rng.choice(LAYOUT_CURRENCY[layout]),
        items=items,
        tax=tax,
        layout=layout,
        font=rng.choice(FONTS)[0],
    )


def _font(label: str, size: int) -> Any:
    for name, module, key in FONTS:
        if name == label:
            if module is None:
                return ImageFont.load_default(size)
            files = __import__(module).font_files_ttf
            return ImageFont.truetype(files[key], size)
    raise ValueError(f"unknown font {label!r}; choose from {[f[0] for f in FONTS]}")


def _money(spec: ReceiptSpec, amount: Decimal) -> str:
    text = f"{amount:,.2f}"
    if spec.layout == "euro":
        return text.replace(",", " ").replace(".", ",").replace(" ", ".")
    if spec.layout == "us":
        return f"${text}"
    return text


def _date(spec: ReceiptSpec) -> str:
    day = spec.purchased_on
    if spec.layout == "euro":
        return f"Datum {day:%d.%m.%Y}  12:41"
    if spec.layout == "us":
        return f"{day:%b} {day.day}, {day.year}  3:05 PM"
    return f"Date: {day.isoformat()}"


def receipt_lines(spec: ReceiptSpec) -> list[tuple[str, str, str]]:
    """The printed lines as (left text, right text, alignment of the left text)."""
    lines = [(spec.merchant.upper(), "", "center"), (spec.address, "", "center")]
    if spec.layout != "us":
        lines.append((_date(spec), "", "left"))
    lines.append(("", "", "left"))
    lines += [(name, _money(spec, price), "left") for name, price in spec.items]
    lines.append(("-" * 8, "", "left"))
    if spec.layout == "us":
        lines.append(("Subtotal", _money(spec, spec.subtotal), "left"))
        lines.append(("Tax 8%", _money(spec, spec.tax), "left"))
        lines.append(("AMOUNT DUE", _money(spec, spec.total), "left"))
        lines.append((_date(spec), "", "left"))
    elif spec.layout == "euro":
        lines.append((f"TOTAL {spec.currency}", _money(spec, spec.total), "left"))
    else:
        lines.append(("TOTAL", f"{spec.currency} {_money(spec, spec.total)}", "left"))
    lines.append(("Thank you for shopping!", "", "center"))
    return lines


def render_receipt(spec: ReceiptSpec, *, noisy: bool = False, seed: int = 0) -> bytes:
    """The receipt as a PNG image."""
    size = 22 if spec.font != "pillow" else 21
    font = _font(spec.font, size)
    line_height = int(size * 1.6)
    lines = receipt_lines(spec)
    width, margin = 460, 24
    image = Image.new("L", (width, margin * 2 + line_height * len(lines)), 250)
    draw = ImageDraw.Draw(image)
    for row, (left, right, align) in enumerate(lines):
        y = margin + row * line_height
        if align == "center":
            x = (width - draw.textlength(left, font=font)) / 2
        else:
            x = margin
        draw.text((x, y), left, fill=20, font=font)
        if right:
            draw.text((width - margin - draw.textlength(right, font=font), y), right, 20, font)
    if noisy:
        image = _age(image, random.Random(seed))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _age(image: Image.Image, rng: random.Random) -> Image.Image:
    """A slight skew, blur and paper speckles."""
    image = image.rotate(rng.uniform(-1.5, 1.5), resample=Image.Resampling.BICUBIC, fillcolor=250)
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    draw = ImageDraw.Draw(image)
    for _ in range(image.width * image.height // 400):
        x, y = rng.randrange(image.width), rng.randrange(image.height)
        draw.point((x, y), fill=rng.randint(120, 200))
    return image
