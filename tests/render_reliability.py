"""Writes `docs/reliability.md` from the bad-input table in `tests/bad_inputs.py`.

    python tests/render_reliability.py

`tests/test_bad_inputs.py` checks that the committed file equals `render()`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_inputs import AREAS, CASES, OUTCOMES
from test_fuzz_readers import CASE_IDS, KNOWN, SEEDS

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"

INTRO = """\
# Reliability: what bad input and faults get

Every row below is a case in `tests/bad_inputs.py`, run by `tests/test_bad_inputs.py`
(`make test`; the fault cases are marked `integration`). This page is generated from that
table by `python tests/render_reliability.py`, and a test fails when the two differ.

Outcomes:

- **error**: an API call raises the named exception with a one-line message that names the
  file, argument, key or shape; a CLI exits non-zero with one `error:` line on stderr and no
  traceback.
- **ok**: the call succeeds and the result is checked as described.
- **preserved**: a destructive command is refused, and the files it could have destroyed
  are byte-for-byte unchanged afterwards.

A case marked *pending (branch)* gets its expected outcome once that branch's fix is
merged; until then its test is an expected failure (`xfail(strict=True)`), which turns into
a failure as soon as the fix lands, so the mark is removed with the merge.

The readers that take files from users (`.npz`, `model.keras`, `config.json` /
`labels.txt`, `.tflite`, images) are also fuzzed with truncations and seeded byte flips of
valid files in `tests/test_fuzz_readers.py`: each case must end in the reader's documented
error or a correct result, never another exception type, a hang or a crash.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The Markdown page of the table."""
    lines = [INTRO, "## Counts", ""]
    by_outcome = Counter(case.expect for case in CASES)
    pending = Counter(case.expect for case in CASES if case.fixed_on)
    lines += ["| outcome | cases | holding today | pending a fix |", "|---|---:|---:|---:|"]
    for outcome in OUTCOMES:
        total = by_outcome[outcome]
        lines.append(f"| {outcome} | {total} | {total - pending[outcome]} | {pending[outcome]} |")
    lines.append(
        f"| **all** | **{len(CASES)}** | **{len(CASES) - sum(pending.values())}** | "
        f"**{sum(pending.values())}** |"
    )
    lines += ["", "| area | error | ok | preserved | all |", "|---|---:|---:|---:|---:|"]
    for area in AREAS:
        counts = Counter(case.expect for case in CASES if case.area == area)
        lines.append(
            f"| {area} | "
            + " | ".join(str(counts[o]) for o in OUTCOMES)
            + f" | {sum(counts.values())} |"
        )
    lines += ["", *_fuzz_section()]
    for area in AREAS:
        lines += [
            "",
            f"## {area}",
            "",
            "| case | input | command | expected | gets |",
            "|---|---|---|---|---|",
        ]
        for case in (c for c in CASES if c.area == area):
            gets = f"pending ({case.fixed_on})" if case.fixed_on else "holds"
            lines.append(
                f"| `{case.id}` | {_cell(case.feeds)} | `{_cell(case.command)}` | "
                f"**{case.expect}**: {_cell(case.expected)} | {gets} |"
            )
    return "\n".join(lines) + "\n"


def _fuzz_section() -> list[str]:
    lines = [
        "## Fuzzed readers",
        "",
        "Each seed file gets truncations at fixed fractions and seeded random byte flips.",
        "",
        "| reader | seed files | cases | pending a fix |",
        "|---|---|---:|---:|",
    ]
    for reader in dict.fromkeys(SEEDS.values()):
        seeds = [seed for seed, r in SEEDS.items() if r == reader]
        ids = [i for i in CASE_IDS if i.rsplit("-", 1)[0] in seeds]
        pending = sum(1 for i in ids if i in KNOWN)
        lines.append(f"| `{reader}` | {', '.join(seeds)} | {len(ids)} | {pending} |")
    lines += ["", "Pending fuzz failures:", ""]
    for reason in dict.fromkeys(KNOWN.values()):
        count = sum(1 for r in KNOWN.values() if r == reason)
        lines.append(f"- {count} case{'s' if count > 1 else ''}: {reason}")
    return lines


def main() -> int:
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render(), encoding="utf-8")
    print(f"Wrote {DOC} ({len(CASES)} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
