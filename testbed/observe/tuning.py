"""Pictures of a warm-pool sweep: waste against start delay (API calls as colour, the Pareto front marked)
and the pool over time for the chosen settings. Takes plain rows and series, as `enilab tune` makes them."""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["draw_tuning", "short_label"]

_KNOBS = (("min_prebound", "min {}"), ("max_prebound", "max {}"), ("release_interval", "{:g} s"),
          ("quick_release", "{}"))


def short_label(row: Mapping[str, Any], varied: Sequence[str]) -> str:
    """The swept knobs of a setting, briefly: `min 2 · max 10 · 30 s · quick`."""
    parts = []
    for key, fmt in _KNOBS:
        if key not in varied:
            continue
        if key == "quick_release":
            parts.append("quick" if row[key] else "slow")
        else:
            parts.append(fmt.format(row[key]))
    return " · ".join(parts) or "as set"


def _varied(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [key for key, _ in _KNOBS if len({r[key] for r in rows}) > 1]


_OFFSETS = [(7, 7, "left", "bottom"), (7, -7, "left", "top"), (-7, 7, "right", "bottom"), (-7, -7, "right", "top"),
            (0, 11, "center", "bottom"), (0, -11, "center", "top"), (16, 0, "left", "center"),
            (-16, 0, "right", "center"), (14, 20, "left", "bottom"), (-14, -20, "right", "top"),
            (14, -20, "left", "top"), (-14, 20, "right", "bottom")]


def _label_points(ax, points: Sequence[tuple[float, float, str]], tint: Mapping[int, Any]) -> list[str]:
    """Label each point with its setting where the text overlaps no other label or marker and stays inside
    the axes, without a leader line; where it cannot, with its number (`#3`, the table's row) instead, and
    return those as key lines (`#3  min 2 · max 5`). Points that fall on one spot share a label; labels of
    points drawn over time too (`tint`: index -> colour) take their line's colour, in bold, and go first."""
    fig = ax.figure
    fig.canvas.draw()
    fig.set_layout_engine("none")  # freeze the layout: labels placed now must not move relative to each other
    spots = _spots(ax, points, tint)
    placer = _Placer(ax, points, tint, [(px, py) for px, py, _ in spots])
    crowded = [m for _, _, m in spots if not placer.place(m, "\n".join(points[n][2] for n in m), (1,), True)]
    key = []
    for members in crowded:
        number = ",".join(f"#{n + 1}" for n in members)
        placer.place(members, number, (1, 2, 3), False)
        key += [f"#{n + 1}  {points[n][2]}" for n in members]
    return key


def _spots(ax, points: Sequence[tuple[float, float, str]], tint: Mapping[int, Any]
           ) -> list[tuple[float, float, list[int]]]:
    """The points grouped by where they fall on screen (within 6 px): (px, py, their indices); the spots
    with a point drawn over time first."""
    to_px = ax.transData.transform
    spots: list[tuple[float, float, list[int]]] = []
    for n, (x, y, _) in enumerate(points):
        px, py = to_px((x, y))
        near = next((s for s in spots if abs(s[0] - px) < 6 and abs(s[1] - py) < 6), None)
        if near is None:
            spots.append((px, py, [n]))
        else:
            near[2].append(n)
    spots.sort(key=lambda s: not any(n in tint for n in s[2]))
    return spots


class _Placer:
    """Tries a label at each offset of `_OFFSETS` (scaled) around its point; remembers the screen boxes
    taken by markers and by the labels placed so far."""

    def __init__(self, ax, points: Sequence[tuple[float, float, str]], tint: Mapping[int, Any],
                 markers: Sequence[tuple[float, float]]) -> None:
        from matplotlib.transforms import Bbox

        self.ax, self.points, self.tint = ax, points, tint
        self.renderer = ax.figure.canvas.get_renderer()
        self.frame = ax.get_window_extent(self.renderer)
        self.taken = [Bbox.from_extents(px - 6, py - 6, px + 6, py + 6) for px, py in markers]

    def place(self, members: list[int], text: str, scales: Sequence[float], free_only: bool) -> bool:
        """Place `text` for the points `members` at the first free offset; else, unless `free_only`, at the
        least crowded one. False if nothing was placed."""
        from matplotlib.text import Text

        x, y, _ = self.points[members[0]]
        tinted = [n for n in members if n in self.tint]
        style = {"fontsize": 8, "color": self.tint[tinted[0]] if tinted else "black",
                 "fontweight": "bold" if tinted else "normal", "linespacing": 1.1,
                 "bbox": {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}}
        frame = self.frame
        best = None  # (overlaps, annotation, box): the first free place, else the least crowded one
        for scale in scales:
            for dx, dy, ha, va in _OFFSETS:
                far = scale > 1 or abs(dx) + abs(dy) > 25  # a leader line shows whose label it is
                lead = {"arrowprops": {"arrowstyle": "-", "color": "0.5", "lw": 0.6}} if far else {}
                ann = self.ax.annotate(text, (x, y), xytext=(dx * scale, dy * scale), textcoords="offset points",
                                       ha=ha, va=va, **lead, **style)
                ann.update_positions(self.renderer)
                box = Text.get_window_extent(ann, self.renderer)  # the text alone, not its leader line
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                clash = sum(box.overlaps(t) for t in self.taken) + (0 if inside else 100)
                if best is None or clash < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (clash, ann, box)
                else:
                    ann.remove()
                if clash == 0:
                    self.taken.append(box)
                    return True
        if free_only:
            best[1].remove()
            return False
        self.taken.append(best[2])
        return True


def draw_tuning(
    rows: Sequence[Mapping[str, Any]],
    series: Sequence[Mapping[str, Sequence[float]]],
    path: str | Path,
    *,
    title: str = "",
    chosen: Sequence[int] = (),
    recommended: int | None = None,
    over_time: str = "the pool over time for the chosen settings",
) -> Path:
    """Draw the trade-off of `rows` and the pool over time of the rows whose indices are in `chosen`
    (`series[i]` belongs to `rows[i]`) to `path` (.png or .svg). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    path = Path(path)
    varied = _varied(rows)
    fig = plt.figure(figsize=(15, 7.8), layout="constrained")
    grid = GridSpec(3, 2, figure=fig, width_ratios=[1.2, 1], height_ratios=[1, 1, 0.28])
    ax = fig.add_subplot(grid[:2, 0])
    key_ax = fig.add_subplot(grid[2, 0])
    key_ax.axis("off")
    _draw_trade_off(ax, rows, recommended, title)
    colors = plt.get_cmap("tab10")
    tint = {i: colors(n) for n, i in enumerate(chosen)}
    _draw_over_time(fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1:, 1]), rows, series, chosen, recommended,
                    varied, over_time, colors)
    points = [(r["ip_hours_wasted"], r["delay_p95_s"], short_label(r, varied)) for r in rows]
    _draw_key(key_ax, _label_points(ax, points, tint), varied)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_trade_off(ax, rows: Sequence[Mapping[str, Any]], recommended: int | None, title: str) -> None:
    """Waste (x) against p95 start delay (y), API calls as colour; the Pareto front ringed, the
    recommended setting starred."""
    from matplotlib.ticker import FuncFormatter

    xs = [r["ip_hours_wasted"] for r in rows]
    ys = [r["delay_p95_s"] for r in rows]
    calls = [r["api_calls"] for r in rows]
    dots = ax.scatter(xs, ys, c=calls, cmap="viridis", s=80, zorder=3, edgecolors="white", linewidths=0.5)
    ax.figure.colorbar(dots, ax=ax, label="cloud API calls (colour)", pad=0.01)
    front = sorted((i for i, r in enumerate(rows) if r["pareto"]), key=lambda i: (xs[i], ys[i]))
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=220, facecolors="none", edgecolors="crimson",
               linewidths=1.6, zorder=2, label="Pareto front (no setting beats it on waste, delay and calls)")
    if recommended is not None:
        ax.scatter([xs[recommended]], [ys[recommended]], marker="*", s=420, color="gold", edgecolors="black",
                   zorder=4, label="recommended")
    ax.set_xlabel("IP-hours wasted: idle IPs held x time (left is cheaper)")
    ax.set_ylabel("p95 pod start delay caused by the pool, s (lower is faster)")
    ax.set_title(title or "warm-pool settings: waste against start delay", loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    ax.margins(x=0.18, y=0.18)
    top = max(ys, default=0) or 1.0  # all delays 0: show 0 to 1 s
    ax.set_ylim(-0.12 * top, top * 1.3)  # room below the zero line for labels; no negative ticks
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "" if v < 0 else f"{v:g}"))
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)


def _draw_over_time(idle_ax, wait_ax, rows: Sequence[Mapping[str, Any]],
                    series: Sequence[Mapping[str, Sequence[float]]], chosen: Sequence[int], recommended: int | None,
                    varied: Sequence[str], over_time: str, colors) -> None:
    """The chosen settings over time: idle IPs held (top) and pods that waited for an IP so far (bottom)."""
    wait_ax.sharex(idle_ax)
    end = max((s["t"][-1] for s in series if s["t"]), default=0)
    unit, per = ("hours", 3600) if end >= 7200 else ("minutes", 60)
    for n, i in enumerate(chosen):
        s = series[i]
        hours = [t / per for t in s["t"]]
        name = short_label(rows[i], varied) + (" (recommended)" if i == recommended else "")
        idle_ax.step(hours, s["idle"], where="post", color=colors(n), label=name, lw=1.3)
        wait_ax.step(hours, list(itertools.accumulate(s["delayed"])), where="post", color=colors(n), lw=1.3)
    idle_ax.set_ylabel("idle IPs held (all nodes)")
    idle_ax.set_title(over_time, loc="left", fontsize=11)
    idle_ax.legend(fontsize=8, loc="best", framealpha=0.9)
    idle_ax.grid(alpha=0.3)
    idle_ax.tick_params(labelbottom=False)
    wait_ax.set_ylabel("pods that waited for an IP\n(so far)")
    wait_ax.set_xlabel(f"simulated {unit}")
    wait_ax.set_ylim(bottom=0)
    idle_ax.set_ylim(bottom=0)
    wait_ax.grid(alpha=0.3)


def _draw_key(ax, key: Sequence[str], varied: Sequence[str]) -> None:
    """Under the trade-off: how to read it, and the settings of the points too crowded to name, in columns."""
    swept = ", ".join(varied) or "nothing swept"
    ax.text(0, 1, f"One point per setting (swept: {swept}); bold labels are also drawn over time, on the right."
            + ("\nWhere points crowd, a label is the setting's row number (#) in the table:" if key else ""),
            fontsize=8.5, va="top", linespacing=1.3, transform=ax.transAxes)
    per_column = 4
    for c in range(0, len(key), per_column):
        ax.text(0.005 + 0.25 * (c // per_column), 0.6, "\n".join(key[c:c + per_column]), fontsize=8, va="top",
                linespacing=1.3, transform=ax.transAxes, family="monospace")
