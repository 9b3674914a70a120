"""Every file, tool and make target the README names exists: relative links, repository paths in code
(blocks and inline; `{a,b}` and `*` expanded), and `make TARGET` in code."""
import re
from pathlib import Path

from conftest import ROOT

README = ROOT / "README.md"
# top-level folders whose paths a README names as the repository's own (runs/, deploy/ and the like are outputs)
REPO_FOLDERS = ("configs", "docs", "ernie_qat", "experiments", "stack", "tests", "tools")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./{},*-]*)" % "|".join(REPO_FOLDERS))
MAKE = re.compile(r"(?<![\w-])make\s+([a-z][\w-]*)")


def code_spans(markdown: str) -> list:
    """The text of fenced code blocks and inline code spans."""
    blocks = FENCED.findall(markdown)
    return blocks + INLINE.findall(FENCED.sub("", markdown))


def expand_braces(path: str) -> list:
    """`a/{b,c}_d` -> [`a/b_d`, `a/c_d`] (one level, repeatedly)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [expanded for choice in match.group(1).split(",")
            for expanded in expand_braces(path[:match.start()] + choice + path[match.end():])]


def missing_paths(markdown: str, root: Path) -> list:
    """Relative link targets and repository paths in code that name nothing under `root`."""
    named = [target.split("#")[0] for target in LINK.findall(markdown)
             if not re.match(r"[a-z]+:|#", target)]
    named += [path.rstrip(".,;:") for span in code_spans(markdown) for path in PATH.findall(span)]
    return sorted({path for path in named if path and not all(
        list(root.glob(candidate.rstrip("/"))) for candidate in expand_braces(path))})


def make_targets(makefile: Path) -> set:
    return set(re.findall(r"^([a-z][\w-]*):", makefile.read_text(), re.MULTILINE))


def test_the_readme_names_only_what_exists():
    markdown = README.read_text(encoding="utf-8")
    assert missing_paths(markdown, ROOT) == []
    named_targets = {target for span in code_spans(markdown) for target in MAKE.findall(span)}
    assert named_targets and named_targets <= make_targets(ROOT / "Makefile"), named_targets - make_targets(
        ROOT / "Makefile")


def test_the_check_finds_what_is_missing(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "train.py").write_text("")
    markdown = ("[a](docs/a.md#part) [b](docs/b.md) [web](https://example.org) ![img](docs/c.png)\n"
                "```bash\npython tools/train.py --out runs/x\npython tools/gone.py\nmake demo\n```\n"
                "see `docs/{a,z}.md` and `tools/*.py`, `configs/`\n")
    assert missing_paths(markdown, tmp_path) == ["configs/", "docs/b.md", "docs/c.png", "docs/{a,z}.md",
                                                 "tools/gone.py"]
    assert {t for span in code_spans(markdown) for t in MAKE.findall(span)} == {"demo"}
