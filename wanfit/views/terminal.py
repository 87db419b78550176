"""Plain terminal output for `wanfit plan`: styled text as ANSI escapes, the terminal's width, and
word wrapping that keeps styles. No rich here: importing rich and laying a report out through it
took about 45 ms of plan's start (which must stay under 0.3 s); the other commands use rich.

A styled line is a list of segments: (text, style) with style a space-separated subset of STYLES
("bold green") or None.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

STYLES = {"bold": "1", "dim": "2", "italic": "3", "red": "31", "green": "32"}
PIPED_WIDTH = 200  # wide enough for the candidate table when the output goes to a file
FALLBACK_LINES = 24  # shutil.get_terminal_size's fallback height; only the width is read
Segment = tuple[str, str | None]


def sgr(style: str | None) -> str:
    """The ANSI select-graphic-rendition codes of a style ('bold green' -> '1;32'); '' for none."""
    if not style:
        return ""
    try:
        return ";".join(STYLES[word] for word in style.split())
    except KeyError as unknown:
        raise ValueError(f"unknown style word {unknown} (known: {', '.join(STYLES)})") from None


def combine(*styles: str | None) -> str | None:
    """Styles applied over each other: a row's style under its cell's own."""
    words = " ".join(s for s in styles if s)
    return words or None


@dataclass(frozen=True)
class Terminal:
    width: int
    color: bool

    @classmethod
    def detect(cls, stream: TextIO | None = None, environ: dict[str, str] | None = None) -> Terminal:
        """Width: $COLUMNS, else the terminal's, else PIPED_WIDTH when not a terminal. Color on a
        terminal unless NO_COLOR is set or TERM=dumb; FORCE_COLOR turns it on anywhere (the
        conventions rich and most command-line tools follow)."""
        stream = sys.stdout if stream is None else stream
        env = os.environ if environ is None else environ
        tty = hasattr(stream, "isatty") and stream.isatty()
        columns = env.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            width = int(columns)
        else:
            width = shutil.get_terminal_size((PIPED_WIDTH, FALLBACK_LINES)).columns if tty else PIPED_WIDTH
        plain = "NO_COLOR" in env or env.get("TERM") == "dumb"
        return cls(width=width, color=bool(env.get("FORCE_COLOR")) or (tty and not plain))

    def paint(self, text: str, style: str | None) -> str:
        codes = sgr(style) if self.color else ""
        return f"\x1b[{codes}m{text}\x1b[0m" if codes and text else text

    def line(self, segments: Sequence[Segment]) -> str:
        return "".join(self.paint(text, style) for text, style in segments)

    def wrap(self, segments: Sequence[Segment]) -> list[str]:
        """Segments as lines no wider than the terminal, broken at spaces (a word longer than a line
        stands alone), each piece keeping its segment's style."""
        plain = "".join(text for text, _ in segments)
        styles: list[str | None] = [style for text, style in segments for _ in text]
        lines: list[str] = []
        for start, end in _breaks(plain, self.width):
            pieces: list[Segment] = []
            for i in range(start, end):
                if pieces and pieces[-1][1] == styles[i]:
                    pieces[-1] = (pieces[-1][0] + plain[i], styles[i])
                else:
                    pieces.append((plain[i], styles[i]))
            lines.append(self.line(pieces))
        return lines


def _breaks(text: str, width: int) -> list[tuple[int, int]]:
    """(start, end) of each wrapped line of `text`: greedy at spaces; the spaces at a break are dropped."""
    spans: list[tuple[int, int]] = []
    start, n = 0, len(text)
    while True:
        while start < n and text[start] == " " and spans:  # a continuation line starts at a word
            start += 1
        if n - start <= width:
            spans.append((start, n))
            return spans
        cut = text.rfind(" ", start, start + width + 1)
        if cut <= start:  # one word longer than the line
            cut = text.find(" ", start + width)
            if cut == -1:
                spans.append((start, n))
                return spans
        end = cut
        while end > start and text[end - 1] == " ":
            end -= 1
        spans.append((start, end))
        start = cut
