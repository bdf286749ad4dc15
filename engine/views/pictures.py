"""Pictures of cases drawn with matplotlib (Agg): one case's timeline, a per-unit chart.

Both draw on a ``Figure`` of their own (no pyplot, no global backend switch), so
they are safe to call from a host that uses matplotlib itself. They print
state, trigger, deadline, rung and timer names only: never a case's data, so
no field marked ``pii`` can reach a picture. matplotlib is part of the
``pictures`` extra and is imported when a picture is drawn; without it, drawing
raises :class:`~casework.errors.MissingExtra`. The workflow diagram with its
open and overdue cases per state is Graphviz's: :func:`render_with_counts`
(from :mod:`casework.views.diagrams`, re-exported here). Given the workflow's definition,
states and triggers are named by their ``label``; text is drawn in matplotlib's default
font with the packaged CJK font (:mod:`casework.views.fonts`) for the glyphs it lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import CaseworkError
from ..errors import MissingExtra
from .diagrams import render_with_counts
from .fonts import matplotlib_families
from .labels import Labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .. import Case, Event
    from ..definition import WorkflowSpec

__all__ = ["render_figure_chart", "render_timeline", "render_unit_chart", "render_with_counts"]


@dataclass(frozen=True)
class _Matplotlib:
    """The parts of matplotlib the pictures use, imported when one is drawn."""

    mpl: Any
    dates: Any
    canvas: Any
    figure: Any
    line: Any
    int_locator: Any

    @classmethod
    def load(cls, feature: str) -> _Matplotlib:
        try:
            import matplotlib as mpl
        except ImportError:
            raise MissingExtra(feature, "pictures", "matplotlib") from None
        from matplotlib import dates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator

        return cls(mpl, dates, FigureCanvasAgg, Figure, Line2D, MaxNLocator)


_DPI = 110
_WARN, _ESC, _DUE, _MET, _CYCLE, _GREY = "#e69f00", "#c0392b", "#2c3e50", "#27ae60", "#8e44ad", "#95a5a6"
_PALETTE = ["#4e79a7", "#59a14f", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#e15759", "#bab0ac"]


def _check_fmt(fmt: str) -> None:
    if fmt not in {"png", "svg"}:
        raise CaseworkError(f"picture format must be png or svg, not {fmt!r}")


def _save(m: _Matplotlib, fig: Figure, out: Path, fmt: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    m.canvas(fig)  # the Agg canvas draws PNG; SVG goes through matplotlib's SVG writer
    with m.mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "casework"}):
        fig.savefig(out, format=fmt, dpi=_DPI, bbox_inches="tight", metadata=_metadata(fmt))
    return out


def _metadata(fmt: str) -> dict[str, Any]:
    # no creation date, so the same case draws the same bytes
    return {"Date": None} if fmt == "svg" else {"Software": "casework (matplotlib)"}


def _aware(t: datetime | str) -> datetime:
    d = datetime.fromisoformat(t) if isinstance(t, str) else t
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


# -- one case through time -------------------------------------------------
@dataclass
class _Visit:
    state: str
    start: datetime
    end: datetime | None
    trigger: str


def _visits(history: Sequence[Event]) -> list[_Visit]:
    """The states the case was in, each from the event that entered it to the next."""
    out: list[_Visit] = []
    for ev in history:
        if ev.to_state is None or (out and ev.to_state == out[-1].state):
            continue
        if out:
            out[-1].end = ev.at
        out.append(_Visit(ev.to_state, ev.at, None, ev.name))
    return out


def _earlier_dues(name: str, clock: dict[str, Any], history: Sequence[Event]) -> list[datetime]:
    """Where the deadline was due before it moved: the dues the warnings announced, or the
    due before an extension (``extended_days`` earlier on the calendar)."""
    due = clock.get("due")
    current = _aware(due) if due else None
    seen = {_aware(ev.details["deadline_due"]) for ev in history
            if ev.details.get("deadline") == name and ev.details.get("deadline_due")}
    earlier = sorted(d for d in seen if current is None or d < current)
    if not earlier and current is not None and clock.get("extended_days"):
        earlier = [current - timedelta(days=float(clock["extended_days"]))]
    return earlier


def render_timeline(case: Case, history: Sequence[Event], timers: Iterable[Any], out: Path,
                    fmt: str = "png", *, now: datetime | None = None,
                    tz: tzinfo | None = None, definition: WorkflowSpec | None = None) -> Path:
    """Draw one case's path through time to ``out`` (PNG or SVG).

    A band per state visited, the deadlines of ``case.clocks`` (start, due, a moved due,
    the overdue stretch), warnings and escalations (with their rungs) as markers, the
    pending ``timers`` (``Engine.pending_timers``) as hollow markers. Open bands run to
    ``now`` (or to the last thing known); times are shown in ``tz`` (UTC by default).
    ``definition`` (the case's version's): states and triggers by their labels.
    """
    _check_fmt(fmt)
    m = _Matplotlib.load("drawing a timeline")
    with m.mpl.rc_context({"font.family": matplotlib_families(m.mpl)}):
        return _timeline(m, case, history, timers, out, fmt, now, tz, Labels(definition))


def _timeline(m: _Matplotlib, case: Case, history: Sequence[Event], timers: Iterable[Any],
              out: Path, fmt: str, now: datetime | None, tz: tzinfo | None,
              labels: Labels) -> Path:
    mdates = m.dates
    tz = tz or UTC
    history = sorted(history, key=lambda ev: ev.seq)
    timers = list(timers)
    visits = _visits(history)
    last = max([case.updated_at, *(ev.at for ev in history)])
    end = max(last, now) if now is not None and not case.final else last
    clocks = sorted(((n, dict(c)) for n, c in case.clocks.items()), key=lambda nc: nc[1]["start"])

    def x(t: datetime | str) -> float:
        return float(mdates.date2num(_aware(t).astimezone(tz).replace(tzinfo=None)))

    states = list(dict.fromkeys(v.state for v in visits))
    lanes = [*states, *(f"deadline {n}" for n, _ in clocks)]
    shown = [*(labels.state_path(s) for s in states), *(f"deadline {n}" for n, _ in clocks)]
    row = {name: i for i, name in enumerate(lanes)}
    tops = list(dict.fromkeys(s.split(".")[0] for s in states))
    colour = {s: _PALETTE[tops.index(s.split(".")[0]) % len(_PALETTE)] for s in states}

    fig = m.figure(figsize=(12, 1.9 + 0.55 * len(lanes)), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    span = max(x(end) - x(case.opened_at), 1.0)
    for v in visits:
        y = row[v.state]
        if case.final and v.end is None:
            ax.plot(x(v.start), y, marker="s", color=colour[v.state], markersize=11, zorder=4)
            ax.annotate(f"{labels.trigger(v.trigger)} (final)", (x(v.start), y), xytext=(9, -3),
                        textcoords="offset points", fontsize=8)
            continue
        stop = v.end or end
        ax.broken_barh([(x(v.start), max(x(stop) - x(v.start), span / 400))], (y - 0.3, 0.6),
                       facecolors=colour[v.state], alpha=0.85, zorder=2)
        ax.annotate(labels.trigger(v.trigger), (x(v.start), y - 0.3), xytext=(1, 2),
                    textcoords="offset points",
                    fontsize=7, color="#333333", va="bottom")
    far = [x(end)]
    for name, c in clocks:
        far.extend(_deadline_lane(ax, x, row[f"deadline {name}"], name, c, history, end))
    for ev in history:
        _event_marker(ax, x, row, ev)
    for t in timers:
        far.append(_timer_marker(ax, x, row, t, case.state))
    if now is not None and now >= last and not case.final:
        ax.axvline(x(now), color=_GREY, linestyle="--", linewidth=1, zorder=1)
        ax.annotate("now", (x(now), -0.75), fontsize=8, color=_GREY, ha="center")

    ax.set_yticks(range(len(lanes)), shown, fontsize=9)
    ax.set_ylim(len(lanes) - 0.4, -0.9)
    left = x(case.opened_at)
    right = max(far)
    pad = max((right - left) * 0.04, 1.0)
    ax.set_xlim(left - pad, right + pad * 2.5)
    locator = mdates.AutoDateLocator(tz=None)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(axis="x", color="#e5e5e5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.axhline(len(states) - 0.5, color="#cccccc", linewidth=0.8)
    overdue = (f", overdue since {case.overdue_since.astimezone(tz):%Y-%m-%d}"
               if case.overdue_since else "")
    fig.suptitle(f"{case.workflow} case {case.id}", fontsize=13, fontweight="bold")
    ax.set_title(f"now {labels.state_path(case.state)}{' (final)' if case.final else ''}, "
                 f"escalation level "
                 f"{case.escalation_level}{overdue}; times in {tz}", fontsize=9, color="#555555")
    fig.legend(handles=_legend(m.line), loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    return _save(m, fig, out, fmt)


def _deadline_lane(ax: Any, x: Any, y: int, name: str, c: dict[str, Any],
                   history: Sequence[Event], end: datetime) -> list[float]:
    """One clock: running stretch, due (and where it was due before), overdue stretch."""
    start = _aware(c["start"])
    stop = _aware(c["stopped_at"]) if c.get("stopped_at") else end
    due = _aware(c["due"]) if c.get("due") else None
    stretches = [(_aware(a), _aware(b) if b else stop) for a, b in c.get("paused") or []]
    if not stretches and c.get("paused_at"):  # a clock kept before stretches were recorded
        stretches = [(_aware(c["paused_at"]), stop)]
    ran_to = min(stop, due) if due is not None else stop
    # Running time is drawn between the paused stretches, never under them.
    running, at = [], start
    for a, b in stretches:
        if a > at:
            running.append((at, min(a, ran_to)))
        at = max(at, b)
    if at < ran_to:
        running.append((at, ran_to))
    ax.broken_barh([(x(a), x(b) - x(a)) for a, b in running if b > a], (y - 0.12, 0.24),
                   facecolors="#bdc3c7", zorder=2)
    for a, b in stretches:
        ax.broken_barh([(x(a), x(b) - x(a))], (y - 0.12, 0.24), facecolors="none",
                       edgecolor=_GREY, hatch="///", zorder=2)
        ax.annotate("paused", (x(a), y), xytext=(2, 8), textcoords="offset points",
                    fontsize=7, color=_GREY)
    business = float(c.get("elapsed") or 0.0)
    actual = (stop - start).total_seconds()
    ax.annotate(f"{business / 86_400:.1f}d business / {actual / 86_400:.1f}d actual",
                (x(start), y), xytext=(0, 9), textcoords="offset points", fontsize=7,
                color=_GREY)
    if due is not None and stop > due:
        ax.broken_barh([(x(due), x(stop) - x(due))], (y - 0.12, 0.24), facecolors=_ESC,
                       alpha=0.75, zorder=2)
    ax.plot(x(start), y, marker="|", color=_DUE, markersize=12, zorder=3)
    far = [x(stop)]
    if due is not None:
        ax.plot(x(due), y, marker="v", color=_DUE, markersize=9, zorder=4)
        ax.annotate(f"due {due:%m-%d}", (x(due), y), xytext=(0, -12), textcoords="offset points",
                    fontsize=7, ha="center", color=_DUE, va="bottom")
        far.append(x(due))
        for before in _earlier_dues(name, c, history):
            ax.plot(x(before), y, marker="v", markerfacecolor="none", markeredgecolor=_DUE,
                    markersize=9, zorder=4)
            ax.annotate("", (x(due), y - 0.22), xytext=(x(before), y - 0.22),
                        arrowprops={"arrowstyle": "->", "color": _DUE, "lw": 0.9})
            moved = (due - before).days
            extended = c.get("extended_days")
            ax.annotate(f"+{moved}d" + (" extension" if extended else " (moved)"),
                        ((x(before) + x(due)) / 2, y - 0.24), ha="center", va="bottom",
                        fontsize=7, color=_DUE)
    if c.get("status") == "stopped":
        met = bool(c.get("met"))
        ax.plot(x(stop), y, marker="o", color=_MET if met else _ESC, markersize=6, zorder=4)
        if not met:
            ax.annotate("late", (x(stop), y), xytext=(5, -10), textcoords="offset points",
                        fontsize=7, color=_ESC)
    return far


def _event_marker(ax: Any, x: Any, row: dict[str, int], ev: Event) -> None:
    lane = f"deadline {ev.details.get('deadline')}"
    if ev.kind == "warning" and lane in row:
        ax.plot(x(ev.at), row[lane], marker="^", color=_WARN, markersize=8, zorder=5,
                markeredgecolor="white", markeredgewidth=0.5)
        share = ev.details.get("share")
        if isinstance(share, int | float):
            ax.annotate(f"{share:.0%}", (x(ev.at), row[lane]), xytext=(0, 6),
                        textcoords="offset points", fontsize=7, ha="center", color=_WARN)
    elif ev.kind in {"escalation", "breach"}:
        y = row.get(lane, row.get(ev.to_state or "", 0))
        level = int(ev.details.get("level") or 1)
        ax.plot(x(ev.at), y, marker="X", color=_ESC, markersize=9, zorder=5,
                markeredgecolor="white", markeredgewidth=0.5)
        ax.annotate(str(ev.details.get("rung") or ev.name), (x(ev.at), y),
                    xytext=(2, 8 + 10 * (-level % 3)), textcoords="offset points",
                    fontsize=7, color=_ESC, fontweight="bold",
                    arrowprops={"arrowstyle": "-", "color": _ESC, "lw": 0.5})
    elif ev.kind == "cycle" and ev.to_state in row:
        ax.plot(x(ev.at), row[ev.to_state], marker="o", color=_CYCLE, markersize=5, zorder=5)
    elif ev.kind == "activity" and ev.to_state in row:
        ax.plot(x(ev.at), row[ev.to_state], marker="D", color="white", markersize=5, zorder=5,
                markeredgecolor="#333333", markeredgewidth=0.8)


def _timer_marker(ax: Any, x: Any, row: dict[str, int], t: Any, state: str) -> float:
    """A pending timer as a hollow marker: warnings and breaches on their deadline's lane."""
    at = x(t.due_at)
    lane = f"deadline {t.name}"
    if t.kind in {"warning", "breach"} and lane in row:
        y, marker, color = row[lane], "^" if t.kind == "warning" else "X", (
            _WARN if t.kind == "warning" else _ESC)
    else:
        here = [s for s in row if s == state or (t.state and s.startswith(f"{t.state}."))]
        y, marker, color = row[here[0]] if here else 0, "o", _CYCLE
    ax.plot(at, y, marker=marker, markerfacecolor="none", markeredgecolor=color, markersize=9,
            markeredgewidth=1.4, zorder=5)
    ax.annotate(f"{t.name} (pending)", (at, y), xytext=(6, 4), textcoords="offset points",
                fontsize=7, color=color)
    return at


def _legend(line: Any) -> list[Line2D]:
    """The legend's entries; ``line`` is matplotlib's ``Line2D``."""

    def m(label: str, marker: str, color: str, hollow: bool = False, size: float = 8) -> Line2D:
        return line([], [], linestyle="none", marker=marker, color=color, markersize=size,
                      markerfacecolor="none" if hollow else color, label=label)

    return [m("deadline start", "|", _DUE, size=10), m("due", "v", _DUE),
            m("due before it moved", "v", _DUE, hollow=True), m("warning", "^", _WARN),
            m("escalation (rung)", "X", _ESC), m("return-visit cycle", "o", _CYCLE, size=6),
            m("activity", "D", "#333333", hollow=True, size=6),
            m("pending timer", "o", _GREY, hollow=True),
            line([], [], color=_ESC, linewidth=6, alpha=0.75, label="overdue"),
            m("deadline met / late", "o", _MET, size=6)]


# -- per-unit chart --------------------------------------------------------
def render_unit_chart(rows: Sequence[tuple[str | None, int, int]], out: Path, fmt: str = "png", *,
                      title: str = "Open and overdue cases per unit") -> Path:
    """Draw horizontal bars of open cases per unit, their overdue part in red.

    ``rows``: ``(unit, open, overdue)``, drawn top to bottom in the order given.
    """
    _check_fmt(fmt)
    m = _Matplotlib.load("drawing a unit chart")
    with m.mpl.rc_context({"font.family": matplotlib_families(m.mpl)}):
        return _unit_chart(m, rows, out, fmt, title)


def _unit_chart(m: _Matplotlib, rows: Sequence[tuple[str | None, int, int]], out: Path, fmt: str,
                title: str) -> Path:
    bars = [(u or "(no unit)", int(o), int(d)) for u, o, d in rows]
    fig = m.figure(figsize=(8, 1.6 + 0.45 * max(len(bars), 1)), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=12, fontweight="bold")
    if not bars:
        ax.text(0.5, 0.5, "no open cases", ha="center", va="center", transform=ax.transAxes,
                fontsize=11, color=_GREY)
        ax.set_axis_off()
        return _save(m, fig, out, fmt)
    ys = list(range(len(bars)))
    opened = [o for _, o, _ in bars]
    overdue = [d for _, _, d in bars]
    ax.barh(ys, opened, color=_PALETTE[0], alpha=0.35, label="open", height=0.6)
    ax.barh(ys, overdue, color=_ESC, alpha=0.85, label="of which overdue", height=0.6)
    for y, (_, o, d) in zip(ys, bars, strict=True):
        ax.annotate(f"{o} open" + (f", {d} overdue" if d else ""), (o, y), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=9,
                    color=_ESC if d else "#333333")
    ax.set_yticks(ys, [u for u, _, _ in bars], fontsize=10)
    ax.invert_yaxis()
    ax.set_xlim(0, max([*opened, 1]) * 1.3)
    ax.xaxis.set_major_locator(m.int_locator(integer=True))
    ax.set_xlabel("cases")
    ax.grid(axis="x", color="#e5e5e5")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _save(m, fig, out, fmt)


# -- a report's figures -----------------------------------------------------
def render_figure_chart(rows: Sequence[tuple[str, float]], out: Path, fmt: str = "png", *,
                        title: str = "Figures") -> Path:
    """Draw horizontal bars of a report's figures: ``(label, value)``, top to bottom."""
    _check_fmt(fmt)
    m = _Matplotlib.load("drawing a chart of figures")
    with m.mpl.rc_context({"font.family": matplotlib_families(m.mpl)}):
        bars = [(str(label), float(v)) for label, v in rows]
        fig = m.figure(figsize=(8, 1.4 + 0.4 * max(len(bars), 1)), dpi=_DPI, layout="constrained")
        ax = fig.add_subplot()
        ax.set_title(title, fontsize=12, fontweight="bold")
        if not bars:
            ax.text(0.5, 0.5, "no figures", ha="center", va="center", transform=ax.transAxes,
                    fontsize=11, color=_GREY)
            ax.set_axis_off()
            return _save(m, fig, out, fmt)
        ys = list(range(len(bars)))
        values = [v for _, v in bars]
        ax.barh(ys, values, color=_PALETTE[0], alpha=0.75, height=0.6)
        for y, v in zip(ys, values, strict=True):
            ax.annotate(f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}", (v, y),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)
        ax.set_yticks(ys, [lab for lab, _ in bars], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, max([*values, 1.0]) * 1.25)
        ax.grid(axis="x", color="#e5e5e5")
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        return _save(m, fig, out, fmt)
