"""Assemble README.md from the section files in docs/ (one per area), demoting their headings one
level and pointing image links at docs/img. Run: python docs/assemble_readme.py"""

from pathlib import Path

DOCS = Path(__file__).resolve().parent
ORDER = ["00_intro", "demo", "mock", "vla", "server", "dropin", "robot_client", "learner", "learning",
         "results", "operator_page", "calibration", "deploy", "reliability"]


def _headings(text: str):
    fenced = False
    for i, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            yield i, len(line) - len(line.lstrip("#"))


def demote(text: str) -> str:
    """Shift headings (outside code blocks) so the section's top heading is level 2."""
    levels = dict(_headings(text))
    shift = 2 - min(levels.values(), default=2)
    out = []
    for i, line in enumerate(text.splitlines()):
        if i in levels:
            line = "#" * (levels[i] + shift) + line[levels[i]:]
        out.append(line.replace("](img/", "](docs/img/").replace('src="img/', 'src="docs/img/'))
    return "\n".join(out)


def main() -> None:
    parts = []
    for name in ORDER:
        path = DOCS / f"{name}.md"
        if not path.exists():
            continue
        text = path.read_text().strip()
        parts.append(text if name == "00_intro" else demote(text))
    (DOCS.parent / "README.md").write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
