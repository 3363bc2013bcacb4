"""A forecast as people read it: a table per stage with a low and a high figure, the total, and the assumptions."""

from __future__ import annotations

from typing import Sequence

from .forecast import ZERO, Range, StageForecast

_HEADER = ("stage", "model", "rows", "cached", "requests", "tokens", "dollars", "expected")


def total_dollars(stages: Sequence[StageForecast]) -> tuple[Range, float]:
    """The selection's dollars: the sum of the stages' ranges, and of their expected figures."""
    total = ZERO
    for stage in stages:
        total = total + stage.dollars
    return total, sum(stage.expected_dollars for stage in stages)


def _count(value: float) -> str:
    value = round(value)
    return f"{value / 1e6:.1f}M" if value >= 1e6 else f"{value / 1e3:.1f}K" if value >= 1e4 else f"{value:,}"


def _span(low: float, high: float, format_one) -> str:
    return format_one(low) if format_one(low) == format_one(high) else f"{format_one(low)} - {format_one(high)}"


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 100 else f"${value:.4f}"


def _row(stage: StageForecast) -> tuple[str, ...]:
    tokens = stage.prompt_tokens + stage.completion_tokens
    return (stage.stage, stage.model, f"{stage.rows:,}", f"{stage.cached:,}",
            _span(stage.requests.low, stage.requests.high, _count), _span(tokens.low, tokens.high, _count),
            _span(stage.dollars.low, stage.dollars.high, _money), _money(stage.expected_dollars))


def _rows(stages: Sequence[StageForecast]) -> list[tuple[str, ...]]:
    dollars, expected = total_dollars(stages)
    rows = [_row(stage) for stage in stages]
    rows.append(("total", "", f"{sum(s.rows for s in stages):,}", f"{sum(s.cached for s in stages):,}", "", "",
                 _span(dollars.low, dollars.high, _money), _money(expected)))
    return rows


def assumptions(stages: Sequence[StageForecast]) -> list[str]:
    return [f"{stage.stage}: {stage.basis}" for stage in stages]


def text_table(stages: Sequence[StageForecast]) -> str:
    """The forecast for a terminal: aligned columns, the total, then each stage's assumptions."""
    rows = [_HEADER, *_rows(stages)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = ["  ".join(cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in
                       enumerate(zip(row, widths))).rstrip() for row in rows]
    return "\n".join([*lines, "", "assumptions:", *(f"  {line}" for line in assumptions(stages))])


def markdown_table(stages: Sequence[StageForecast]) -> str:
    """The forecast for the Dagster UI."""
    def line(cells) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(_HEADER), line(["---"] * len(_HEADER)), *(line(row) for row in _rows(stages))])
