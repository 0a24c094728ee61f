#!/usr/bin/env python3
"""Draws the plots of docs/BENCHMARKS.md as SVG from bench/run.sh's summary lines.

    python3 bench/plot.py bench/results/<date>/summary.txt docs/benchmarks

Standard library only: the charts are simple bars and lines written as SVG by hand.
"""
import sys
from pathlib import Path

COLOURS = {"lingr": "#2b6cb0", "nchan": "#38a169", "pushpin": "#d69e2e",
           "pub/sub": "#2b6cb0", "synchronous": "#c53030"}


def read(path):
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("summary "):
            rows.append(dict(part.split("=", 1) for part in line.split()[1:] if "=" in part))
    return rows


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def frame(title, unit, width, height, left, top, plot_h, peak, decimals):
    """The SVG's start: background, title, horizontal grid lines with their values, unit."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        out.append(f'<line x1="{left}" y1="{y}" x2="{width - 20}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{value:.{decimals}f}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
               f'text-anchor="middle">{unit}</text>')
    return out


def finish(out, path):
    """Closes the SVG and writes it."""
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")


def bars(title, unit, groups, path):
    """groups: [(group label, [(series, value)])]"""
    width, height, left, bottom, top = 640, 360, 70, 50, 40
    series = []
    for _, values in groups:
        for name, _ in values:
            if name not in series:
                series.append(name)
    peak = max([v for _, values in groups for _, v in values] + [1e-9]) * 1.15
    plot_w, plot_h = width - left - 20, height - top - bottom
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    out = frame(title, unit, width, height, left, top, plot_h, peak, 0)
    for g, (label, values) in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for name, value in values:
            s = series.index(name)
            h = plot_h * value / peak
            x = x0 + s * bar_w
            y = top + plot_h - h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.9:.1f}" height="{h:.1f}" '
                       f'fill="{COLOURS.get(name, "#718096")}"/>')
            out.append(f'<text x="{x + bar_w * 0.45:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                       f'font-size="10">{value:.1f}</text>')
        out.append(f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{height - bottom + 18}" '
                   f'text-anchor="middle">{label}</text>')
    for s, name in enumerate(series):
        x = left + 10 + s * 110
        out.append(f'<rect x="{x}" y="{height - 18}" width="10" height="10" '
                   f'fill="{COLOURS.get(name, "#718096")}"/>')
        out.append(f'<text x="{x + 14}" y="{height - 9}">{name}</text>')
    finish(out, path)


def lines(title, unit, xs, series, path):
    """series: [(name, [y per x])]"""
    width, height, left, bottom, top = 700, 380, 70, 70, 40
    plot_w, plot_h = width - left - 20, height - top - bottom
    peak = max([y for _, ys in series for y in ys] + [1e-9]) * 1.15
    def px(i):
        return left + plot_w * i / max(len(xs) - 1, 1)
    def py(y):
        return top + plot_h - plot_h * y / peak
    out = frame(title, unit, width, height, left, top, plot_h, peak, 1)
    for i, x in enumerate(xs):
        out.append(f'<text x="{px(i)}" y="{height - bottom + 18}" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - bottom + 34}" text-anchor="middle">comet replicas</text>')
    for s, (name, ys) in enumerate(series):
        colour = COLOURS.get(name.split()[0], "#718096")
        dash = ' stroke-dasharray="5,3"' if "p99" in name else ""
        points = " ".join(f"{px(i):.1f},{py(y):.1f}" for i, y in enumerate(ys))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        x = left + 10 + s * 155
        out.append(f'<line x1="{x}" y1="{height - 13}" x2="{x + 20}" y2="{height - 13}" stroke="{colour}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{x + 24}" y="{height - 9}">{name}</text>')
    finish(out, path)


def main():
    rows, target_dir = read(sys.argv[1]), Path(sys.argv[2])
    target_dir.mkdir(parents=True, exist_ok=True)
    fanout = [r for r in rows if "target" in r]
    sizes = sorted({int(r["observers"]) for r in fanout})
    memory, latency = [], []
    for size in sizes:
        here = [r for r in fanout if int(r["observers"]) == size]
        memory.append((f"{size:,} held", [(r["target"], number(r["kib_per_held"])) for r in here]))
        latency.append((f"{size:,} observers", [(r["target"], number(r["worst_p99_ms"])) for r in here]))
    bars("Server memory per held observe (lower is better)", "KiB", memory,
         target_dir / "memory-per-held-observe.svg")
    bars("Fan-out latency, worst round's p99 (lower is better)", "ms", latency,
         target_dir / "fanout-p99.svg")
    replicas = [r for r in rows if r.get("scenario") == "replicas"]
    if replicas:
        xs = [r["replicas"] for r in replicas]
        lines("Say latency against comet replicas", "ms", xs, [
            ("pub/sub p50", [number(r["pubsub_p50_ms"]) for r in replicas]),
            ("pub/sub p99", [number(r["pubsub_p99_ms"]) for r in replicas]),
            ("synchronous p50", [number(r["sync_p50_ms"]) for r in replicas]),
            ("synchronous p99", [number(r["sync_p99_ms"]) for r in replicas]),
        ], target_dir / "say-latency-replicas.svg")


if __name__ == "__main__":
    main()
