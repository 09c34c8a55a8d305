"""Fenced code blocks of the project's Markdown documents, with the test marker before each.

A block may be preceded by an HTML comment `<!-- test: WORDS -->` (invisible when rendered)
that tells the tests how to run it; `Block.marker` holds WORDS.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
MARKER = re.compile(r"<!--\s*test:\s*(?P<words>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    source: str
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of the Markdown file `path`, in order."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        indent = match["indent"]
        body = "".join(
            line.removeprefix(indent) for line in match["body"].splitlines(keepends=True)
        )
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        found.append(
            Block(
                path=path,
                line=text.count("\n", 0, match.start()) + 1,
                lang=match["lang"],
                source=body,
                marker=marker["words"] if marker else None,
            )
        )
    return found


def shell_commands(source: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", source)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


def command_key(command: str) -> str:
    """What a README command is filed under in the coverage table.

    `python -m MODULE ...` -> `python -m MODULE`, `make TARGET` -> `make TARGET`, and any
    other command (a `pip install`) is its own key.
    """
    words = shlex.split(command)
    if words[:2] == ["python", "-m"]:
        return " ".join(words[:3])
    if words[0] == "make":
        return " ".join(words[:2])
    return command
