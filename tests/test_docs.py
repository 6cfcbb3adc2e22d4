"""README.md and BENCHMARKS.md quote result files: every decimal figure of README is in results/ or BENCHMARKS.md,
every one of BENCHMARKS.md in results/; the include blocks equal their files; README stays a short guide."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DECIMAL = re.compile(r"(?<![\w.])\d+(?:\.\d+)+")      # 0.936, 1.8, 3.11.7 (a version is one figure)


def _figures(text: str) -> set:
    text = re.sub(r"https?://\S+", "", text)          # addresses are not figures
    return set(DECIMAL.findall(text))


def _results_text() -> str:
    return "\n".join(p.read_text(errors="ignore") for p in sorted((ROOT / "results").rglob("*"))
                     if p.is_file() and p.suffix in (".md", ".json", ".jsonl", ".csv"))


def test_decimal_figure_pattern():
    assert _figures("F1 0.936 vs 0.953, 1.8x. jax 0.10.2, https://x.org/a/1.5, v3.11, lr=0.001") == \
        {"0.936", "0.953", "1.8", "0.10.2", "0.001"}


@pytest.mark.parametrize("doc,sources", [("README.md", ("results", "BENCHMARKS.md")), ("BENCHMARKS.md", ("results",))])
def test_every_figure_comes_from_a_result_file(doc, sources):
    pool = _results_text() + ("\n" + (ROOT / "BENCHMARKS.md").read_text() if "BENCHMARKS.md" in sources else "")
    missing = sorted(f for f in _figures((ROOT / doc).read_text()) if f not in pool)
    assert not missing, f"{doc} states figures no result file holds: {missing}"


def test_include_blocks_equal_their_files():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_docs.py"), "--check"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines"
    assert (ROOT / "LICENSE").is_file()
    for link in re.findall(r"\]\(((?:docs|results)/[^)#]+|BENCHMARKS\.md|LICENSE)\)", "\n".join(lines)):
        assert (ROOT / link).exists(), f"README links to {link}, which is missing"
