"""The docs: every table is what its JSON renders, every relative link resolves, and the README
stays a guide (at most 250 lines and 12 KB)."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import tables  # noqa: E402

DOCS = tables.documents()


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_is_what_its_json_renders(path):
    text = path.read_text()
    assert tables.render(text) == text, f"run python -m benchmarks.tables: a table in {path.name} is stale"


def test_a_changed_json_makes_its_table_stale(monkeypatch):
    readme = (ROOT / "README.md").read_text()
    assert "<!-- table: peers -->" in readme
    real = tables.load
    monkeypatch.setattr(tables, "load", lambda name: {**real(name), "iw_samples": 7})
    assert tables.render(readme) != readme


@pytest.mark.parametrize("path", [p for p in DOCS if "archive" not in p.parts] + [ROOT / "CHANGELOG.md",
                                  ROOT / "benchmarks" / "README.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)|src=\"([^\"]+)\"", path.read_text()):
        target = next(t for t in target if t)
        if "://" not in target:
            assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"


def test_the_readme_is_a_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250 and len(text.encode()) <= 12_000
    head = "\n".join(text.splitlines()[:40])
    for needed in ("fvae sample fvae-mnist", "fvae train --data", "fvae.train(", "fvae eval"):
        assert needed in head
    assert not re.search(r"fvae 0\.\d", text) and "host" not in text
