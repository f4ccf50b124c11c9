"""Small PIL-only charts (matplotlib is not a dependency): line plots with axes, ticks and a legend,
and bar charts with error bars. Enough for loss curves and accuracies in reports and the demo."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (127, 127, 127))


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: tuple[int, int, int] | None = None


def moving_average(ys: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` points (noisy per-step losses read better smoothed)."""
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y
        if i >= window:
            total -= ys[i - window]
        out.append(total / min(i + 1, window))
    return out


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 x 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(target - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step - 1e-9)) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


def _font(size: int):
    return ImageFont.load_default(size=size)


class _Axes:
    """Maps data to pixels inside the plotting box and draws the frame, ticks and labels."""

    def __init__(self, img: Image.Image, xr: tuple[float, float], yr: tuple[float, float], title: str,
                 xlabel: str, ylabel: str, xticks: list[float] | None = None):
        self.d = ImageDraw.Draw(img)
        w, h = img.size
        self.left, self.right, self.top, self.bottom = 70, w - 20, 40, h - 55
        self.xt = xticks if xticks is not None else nice_ticks(*xr)
        self.yt = nice_ticks(*yr)
        self.x0, self.x1 = (min(self.xt[0], xr[0]), max(self.xt[-1], xr[1])) if self.xt else xr
        self.y0, self.y1 = self.yt[0], self.yt[-1]
        f, small = _font(16), _font(12)
        self.d.text(((self.left + self.right) / 2, 12), title, fill="black", font=f, anchor="mt")
        self.d.text(((self.left + self.right) / 2, h - 8), xlabel, fill="black", font=small, anchor="mb")
        lab = Image.new("RGBA", (int(self.d.textlength(ylabel, font=small)) + 4, 16), (255, 255, 255, 0))
        ImageDraw.Draw(lab).text((2, 0), ylabel, fill="black", font=small)
        img.paste(lab.rotate(90, expand=True), (4, int((self.top + self.bottom) / 2 - lab.width / 2)),
                  lab.rotate(90, expand=True))
        for v in self.yt:
            y = self.py(v)
            self.d.line([(self.left, y), (self.right, y)], fill=(230, 230, 230))
            self.d.line([(self.left - 5, y), (self.left, y)], fill="black")
            self.d.text((self.left - 8, y), _fmt(v), fill="black", font=small, anchor="rm")
        self.d.rectangle([self.left, self.top, self.right, self.bottom], outline="black")

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / ((self.x1 - self.x0) or 1) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / ((self.y1 - self.y0) or 1) * (self.bottom - self.top)

    def xtick(self, x: float, label: str | None = None) -> None:
        px = self.px(x)
        self.d.line([(px, self.bottom), (px, self.bottom + 5)], fill="black")
        self.d.text((px, self.bottom + 8), label if label is not None else _fmt(x), fill="black",
                    font=_font(12), anchor="mt")

    def legend(self, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
        f = _font(12)
        width = max(self.d.textlength(t, font=f) for t, _ in entries) + 36
        x, y = self.right - width - 8, self.top + 8
        self.d.rectangle([x, y, x + width, y + 18 * len(entries) + 6], fill="white", outline=(150, 150, 150))
        for i, (text, col) in enumerate(entries):
            yy = y + 12 + 18 * i
            self.d.line([(x + 6, yy), (x + 26, yy)], fill=col, width=3)
            self.d.text((x + 32, yy), text, fill="black", font=f, anchor="lm")


def line_plot(series: Sequence[Series], path: str | Path, *, title: str = "", xlabel: str = "",
              ylabel: str = "", size: tuple[int, int] = (720, 420), y_range: tuple[float, float] | None = None
              ) -> Path:
    """One PNG with every series as a polyline, ticks on both axes and a legend (top right)."""
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys if math.isfinite(y)]
    img = Image.new("RGB", size, "white")
    ax = _Axes(img, (min(xs), max(xs)), y_range or (min(ys), max(ys)), title, xlabel, ylabel)
    for x in ax.xt:
        ax.xtick(x)
    entries = []
    for i, s in enumerate(series):
        col = s.colour or PALETTE[i % len(PALETTE)]
        pts = [(ax.px(x), ax.py(min(max(y, ax.y0), ax.y1))) for x, y in zip(s.xs, s.ys) if math.isfinite(y)]
        if len(pts) > 1:
            ax.d.line(pts, fill=col, width=2)
        entries.append((s.label, col))
    ax.legend(entries)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return path


def bar_plot(labels: Sequence[str], values: Sequence[float], path: str | Path, *,
             errors: Sequence[tuple[float, float]] | None = None, title: str = "", ylabel: str = "",
             size: tuple[int, int] = (560, 400), y_range: tuple[float, float] = (0.0, 1.0),
             reference: tuple[str, float] | None = None) -> Path:
    """Bars with optional (low, high) error bars and an optional dashed reference line (e.g. chance)."""
    img = Image.new("RGB", size, "white")
    n = len(labels)
    ax = _Axes(img, (-0.5, n - 0.5), y_range, title, "", ylabel, xticks=[])
    bw = (ax.right - ax.left) / n * 0.55
    for i, (lab, v) in enumerate(zip(labels, values)):
        cx, col = ax.px(i), PALETTE[i % len(PALETTE)]
        ax.d.rectangle([cx - bw / 2, ax.py(v), cx + bw / 2, ax.py(ax.y0)], fill=col)
        ax.xtick(i, lab)
        ax.d.text((cx + bw / 2 + 4, ax.py(v)), f"{v:.2f}", fill="black", font=_font(12), anchor="lm")
        if errors is not None:
            lo, hi = errors[i]
            ax.d.line([(cx, ax.py(lo)), (cx, ax.py(hi))], fill="black", width=2)
            for y in (lo, hi):
                ax.d.line([(cx - 8, ax.py(y)), (cx + 8, ax.py(y))], fill="black", width=2)
    if reference is not None:
        text, y = reference
        py = ax.py(y)
        for x in range(ax.left, ax.right, 12):
            ax.d.line([(x, py), (min(x + 6, ax.right), py)], fill=(90, 90, 90), width=1)
        ax.d.text((ax.left + 6, py - 3), text, fill=(90, 90, 90), font=_font(11), anchor="lb")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return path
