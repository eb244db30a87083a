"""The documentation: docs/config.md is what scripts/config_doc.py writes, every local link in the
README, the changelog and docs/ resolves (files and #anchors), and the README's quickstart runs."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_FILES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


# --- docs/config.md ------------------------------------------------------------------------------


def _config_doc_script():
    path = ROOT / "scripts" / "config_doc.py"
    spec = importlib.util.spec_from_file_location("config_doc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_page_is_up_to_date():
    expected = _config_doc_script().render()
    page = ROOT / "docs" / "config.md"
    actual = page.read_text(encoding="utf-8") if page.is_file() else ""
    assert actual == expected, (
        "docs/config.md differs from the config dataclasses: run python scripts/config_doc.py"
    )


# --- links ---------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), with an optional "title"; the target may be in <angle brackets>.
INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, …


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text lowercased, every character dropped
    that is not a letter, mark, digit, connector (`_`), hyphen or space (so `→` and `.` go, `é`
    stays), then spaces turned into hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    kept = "".join(
        c for c in text.lower() if c in " -" or unicodedata.category(c)[0] in "LMN" or c == "_"
    )
    return kept.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 … for repeated headings."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(path: Path) -> list[str]:
    """The targets of the inline links, images and reference definitions of a Markdown file."""
    targets = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
            continue
        line = INLINE_CODE.sub("", line)
        targets.extend(match.group(1) for match in INLINE_LINK.finditer(line))
    return targets


def _broken_links(path: Path) -> list[str]:
    broken = []
    for target in _links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no file {linked.relative_to(ROOT)})")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in _anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {linked.relative_to(ROOT)})")
    return broken


def test_the_doc_files_exist():
    missing = [str(path.relative_to(ROOT)) for path in DOC_FILES if not path.is_file()]
    assert not missing
    assert len(DOC_FILES) > 3, "docs/ holds no pages"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_local_links_resolve(path):
    broken = _broken_links(path)
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {broken}"


def test_slugs_follow_github():
    assert github_slug("Multi30k German→English") == "multi30k-germanenglish"
    assert github_slug("Self-attention, configurable and visible") == (
        "self-attention-configurable-and-visible"
    )
    assert github_slug("The `decode` keys: n-best, é") == "the-decode-keys-n-best-é"
    assert github_slug("run.dtype and [links](x.md)") == "rundtype-and-links"
    assert github_slug("train_log 2.0") == "train_log-20"


# --- the quickstart ------------------------------------------------------------------------------

# The test trains for a few seconds, not the quickstart's minutes: the full quickstart is `make
# quickstart`; this test proves that the documented commands and flags work as written. The
# overrides are valid keys of configs/quickstart.yaml (data.synthetic_size has a minimum of 10).
TRAIN_OVERRIDES = [
    *("--set", "train.max_steps=40"),
    *("--set", "train.eval_every=40"),
    *("--set", "data.synthetic_size=2000"),
    *("--set", "train.eval_max_sentences=50"),  # an untrained model's outputs run long
    "--fresh",
    "--yes",
]


def _quickstart_commands() -> list[list[str]]:
    """The commands of the first ```bash block after the heading that names the Quickstart, each
    split as a shell would split it (trailing `# comments` dropped)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(
        (i for i, line in enumerate(lines) if HEADING.match(line) and "Quickstart" in line), None
    )
    assert start is not None, 'README.md has no heading with "Quickstart"'
    opening = next((i for i in range(start, len(lines)) if lines[i].strip() == "```bash"), None)
    assert opening is not None, "README.md has no ```bash block after its Quickstart heading"
    commands = []
    for line in lines[opening + 1 :]:
        if line.strip().startswith("```"):
            break
        argv = shlex.split(line, comments=True)
        if argv:
            commands.append(argv)
    return commands


def _minitx() -> str:
    beside_python = Path(sys.executable).parent / "minitx"
    found = str(beside_python) if beside_python.is_file() else shutil.which("minitx")
    assert found, "no minitx executable beside the test's Python or on PATH"
    return found


@pytest.mark.slow
def test_the_readme_quickstart_runs(tmp_path):
    commands = _quickstart_commands()
    assert [argv[:2] for argv in commands] == [
        ["minitx", "train"],
        ["minitx", "eval"],
        ["minitx", "translate"],
    ], f"the quickstart block should hold train, eval and translate, in that order: {commands}"
    assert commands[0][2] == "configs/quickstart.yaml"
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "quickstart.yaml", tmp_path / "configs" / "quickstart.yaml")
    minitx = _minitx()
    for argv in commands:
        argv = [minitx, *argv[1:], *(TRAIN_OVERRIDES if argv[1] == "train" else [])]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{shlex.join(argv)} exited {done.returncode}:\n{done.stderr}"
    translations = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(translations) == 2, f"translate should print two lines, got {done.stdout!r}"
