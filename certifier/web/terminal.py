"""The overview for a terminal: what ``certifier status`` prints.

It renders the same :class:`certifier.pipeline.read.Overview` as the dashboard's front page, in
plain text with ASCII progress bars, so it reads the same in a terminal, a log or an email.
Upstream text (commit titles, excuses) is untrusted here too: control characters, including
ANSI escape sequences and bidirectional overrides, are removed before anything is printed, so a
commit title cannot repaint or hide a terminal's lines.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta

from certifier.domain.durations import format_duration
from certifier.pipeline import read


def clean(text: str) -> str:
    """``text`` without control or format characters (escape sequences, bidi overrides)."""
    return "".join(
        " " if ch in "\t\n\r" else ch
        for ch in text
        if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf")
    )


def bar(fraction: float, width: int = 24) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _ago(now: datetime, value: datetime | None) -> str:
    if value is None:
        return ""
    return f"{format_duration(max(now - value, timedelta(0)))} ago"


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(width - 1, 10)] + "…"


def _commit(ref: read.CommitRef) -> str:
    return f"{clean(ref.component)} {ref.sha[:12]} {clean(ref.title)}".rstrip()


ROUTINE = frozenset({"queued", "gating", "soaking", "soak_runs"})  # said by the line itself
INDENT = " " * 18


def _entry(entry: read.BoardEntry) -> list[str]:
    head = f"  {entry.state:<8} #{entry.id:<6} "
    detail: list[str] = []
    if entry.soak is not None:
        soak = entry.soak
        left = (f"{format_duration(soak.time_left)} left" if soak.time_left.total_seconds() > 0
                else "duration reached")
        head += (f"{bar(soak.fraction)} {soak.percent:>3} %  {format_duration(soak.elapsed)} of "
                 f"{format_duration(soak.duration)}, {left}")
        running = ", one running" if soak.run_in_progress else ""
        detail.append(f"{soak.passing_runs} of >={soak.min_runs} passing soak runs, "
                      f"{soak.runs_total} so far{running}")
    elif entry.current_run is not None:
        run = entry.current_run
        head += f"{run.label} {run.outcome}" + (f" on {clean(run.testbed)}" if run.testbed else "")
    elif entry.excuses:
        head += clean(entry.excuses[0].message)
    detail.extend(_commit(ref) for ref in entry.changed)
    detail.extend(f"! {clean(e.message)}" for e in entry.excuses if e.kind not in ROUTINE)
    return [head.rstrip(), *(INDENT + line for line in detail)]


def render_overview(data: read.Overview, width: int = 100) -> str:
    """The overview as lines of text no wider than ``width``."""
    now = data.now
    lines: list[str] = []
    kg = data.known_good
    if kg is None:
        lines.append("Known-good: none yet")
    else:
        lines.append(f"Known-good #{kg.version}  promoted {_when(kg.promoted_at)} "
                     f"({_ago(now, kg.promoted_at)}), from candidate {kg.candidate_id}")
        lines.extend(f"  {_commit(ref)}" for ref in kg.components)
    if data.stale:
        what = f"#{kg.version} is older than" if kg else "nothing promoted within"
        lines.append(f"  ! stale: {what} {format_duration(data.stale_after)}")
    lines.append("")
    counts = ", ".join(f"{s} {data.counts.get(s, 0)}" for s in
                       ("queued", "gating", "soaking", "promoted", "rejected", "superseded",
                        "cancelled"))
    lines.append(f"Pipeline: {counts}")
    board = [*data.soaking, *data.gating, *data.queued]
    for entry in board:
        lines.extend(_entry(entry))
    if not board:
        lines.append("  nothing queued, gating or soaking")
    lines.append("")
    lines.append("Recent decisions:")
    for d in data.decisions:
        lines.append(f"  #{d.id:<6} {d.state:<10} {_ago(now, d.finished_at):<16} {clean(d.reason)}")
    if not data.decisions:
        lines.append("  none yet")
    lines.append("")
    lines.append("Testbeds:")
    for t in data.testbeds:
        head = f"  {clean(t.name):<12} {t.role:<5} {t.driver:<6}"
        if t.run_id is None:
            lines.append(f"{head} free")
            continue
        whose = f" (candidate {t.candidate_id}, {t.run_label})" if t.candidate_id else ""
        expired = " EXPIRED" if t.lease_expired else ""
        lines.append(f"{head} run {t.run_id}{whose} since {_ago(now, t.run_started_at)}, "
                     f"until {_when(t.lease_expires_at)}{expired}")
    if not data.testbeds:
        lines.append("  none registered")
    return "\n".join(_fit(line, width) for line in lines)
