"""Charts as inline SVG, drawn on the server: no JavaScript library, works offline, and the
same markup reads well on a 360-px phone (it scales with viewBox)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 320, 160
PAD_L, PAD_R, PAD_T, PAD_B = 34, 8, 10, 24
INK = "#1f2933"
GRID = "#c9d1d9"
BLUE = "#1d4ed8"
ORANGE = "#b45309"


def _frame(title: str, desc: str, body: list[str]) -> str:
    return (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart" '
        f'xmlns="http://www.w3.org/2000/svg" aria-labelledby="t d">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>" + "".join(body) + "</svg>"
    )


def _y_axis(top: float, labels: Sequence[tuple[float, str]]) -> list[str]:
    out = []
    plot_h = HEIGHT - PAD_T - PAD_B
    for value, text in labels:
        y = PAD_T + plot_h * (1 - value / top) if top else HEIGHT - PAD_B
        out.append(
            f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="{INK}">{escape(text)}</text>'
        )
    return out


def signal_chart(samples: Sequence[tuple[float, float]], *, line_name: str) -> str:
    """Signal strength (0-100 %) over time."""
    title = f"Signal strength of {line_name}"
    if len(samples) < 2:
        return _frame(title, "Not enough measurements yet.", [
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="12" text-anchor="middle" '
            f'fill="{INK}">Not enough measurements yet</text>'
        ])
    t0, t1 = samples[0][0], samples[-1][0]
    span = max(t1 - t0, 1.0)
    plot_w = WIDTH - PAD_L - PAD_R
    plot_h = HEIGHT - PAD_T - PAD_B
    points = " ".join(
        f"{PAD_L + plot_w * (t - t0) / span:.1f},"
        f"{PAD_T + plot_h * (1 - max(0.0, min(100.0, v)) / 100):.1f}"
        for t, v in samples
    )
    start = dt.datetime.fromtimestamp(t0, dt.UTC).strftime("%H:%M")
    end = dt.datetime.fromtimestamp(t1, dt.UTC).strftime("%H:%M")
    latest = samples[-1][1]
    body = _y_axis(100, [(0, "0%"), (50, "50%"), (100, "100%")])
    body.append(
        f'<polyline points="{points}" fill="none" stroke="{BLUE}" stroke-width="2" '
        'stroke-linejoin="round"/>'
        f'<text x="{PAD_L}" y="{HEIGHT - 6}" font-size="10" fill="{INK}">{start}</text>'
        f'<text x="{WIDTH - PAD_R}" y="{HEIGHT - 6}" font-size="10" text-anchor="end" '
        f'fill="{INK}">{end} UTC</text>'
    )
    desc = f"{len(samples)} measurements from {start} to {end} UTC; latest {latest:.0f}%."
    return _frame(title, desc, body)


def messages_chart(days: Sequence[tuple[str, int, int]]) -> str:
    """Bars per day: received (blue) and sent (orange)."""
    title = "Messages per day"
    if not days:
        return _frame(title, "No messages yet.", [
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="12" text-anchor="middle" '
            f'fill="{INK}">No messages yet</text>'
        ])
    top = max(1, *(max(i, o) for _, i, o in days))
    plot_w = WIDTH - PAD_L - PAD_R
    plot_h = HEIGHT - PAD_T - PAD_B
    slot = plot_w / len(days)
    bar = max(1.0, slot * 0.4)
    body = _y_axis(top, [(0, "0"), (top, str(top))])
    for n, (day, inbound, outbound) in enumerate(days):
        x = PAD_L + n * slot + slot * 0.1
        for k, (value, colour) in enumerate(((inbound, BLUE), (outbound, ORANGE))):
            h = plot_h * value / top
            body.append(
                f'<rect x="{x + k * bar:.1f}" y="{PAD_T + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(day)}: '
                f'{"received" if k == 0 else "sent"} {value}</title></rect>'
            )
    body.append(
        f'<text x="{PAD_L}" y="{HEIGHT - 6}" font-size="10" fill="{INK}">'
        f"{escape(days[0][0][5:])}</text>"
        f'<text x="{WIDTH - PAD_R}" y="{HEIGHT - 6}" font-size="10" text-anchor="end" '
        f'fill="{INK}">{escape(days[-1][0][5:])}</text>'
    )
    total_in = sum(i for _, i, _ in days)
    total_out = sum(o for _, _, o in days)
    desc = f"{len(days)} days: {total_in} received, {total_out} sent."
    return _frame(title, desc, body)
