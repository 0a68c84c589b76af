"""Code and docs name things, never an issue number: a reader of the repository has no issue list
("the long MetaWorld table's budget", not the number of the issue that asked for it). This file
is the one exception: it spells the pattern out."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ISSUE_NUMBER = re.compile(r"issues? #?[0-9]+|issue-[0-9]+|#[0-9]{2}\b", re.IGNORECASE)


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.splitlines() if (ROOT / p).is_file()]


def test_no_code_or_doc_names_an_issue_number():
    files = [p for p in _tracked("*.py", "*.md") if p != Path(__file__).resolve()]
    assert len(files) > 100
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if ISSUE_NUMBER.search(line)]
    assert hits == []


def test_the_pattern_catches_the_usual_spellings():
    # the spellings are assembled here so that this file does not itself name a number
    word, n = "issue", 25
    for text in (f"at {word} {n}'s budget", f"{word.title()} #{n}", f"see {word}-{n}", f"fixed in #{n}",
                 f"{word}s {n} and {n + 1}"):
        assert ISSUE_NUMBER.search(text), text
    for text in ("the long table's budget", "colour #fff", "a 3x issue", "step #5"):
        assert not ISSUE_NUMBER.search(text), text
