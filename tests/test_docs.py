"""The documentation a newcomer reads: a README that stays short, links that resolve, every page
reachable from the README, and CONTRIBUTING.md's worked example running as printed."""

import re
import sys
import types

import pytest
from conftest import ROOT

README_LIMIT = 8192  # bytes: what it is, the two commands, the generated verdicts, links
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def links(page):
    """Relative links of a Markdown page, outside code blocks: (file, anchor or '')."""
    text = FENCE.sub("", page.read_text())
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        yield (page.parent / path).resolve() if path else page, anchor


def anchors(page):
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens, repeats -1, -2."""
    seen, ids = {}, set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def test_readme_stays_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, (f"README.md is {size} bytes, over {README_LIMIT}: move text to "
                                  "a page of docs/ and link it from docs/README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = [f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
              f"{'#' + anchor if anchor else ''}"
              for target, anchor in links(page)
              if not target.exists()
              or (anchor and target.suffix == ".md" and anchor not in anchors(target))]
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_every_page_reachable_from_the_readme():
    reached, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached or page.suffix != ".md" or not page.exists():
            continue
        reached.add(page)
        todo.extend(target for target, _ in links(page))
    missing = [str(p.relative_to(ROOT)) for p in PAGES if p not in reached]
    assert not missing, f"no path of links from README.md to {missing}: list them in docs/README.md"


def examples(page):
    """The code blocks announced by `<!-- example: PATH -->`, by PATH."""
    return dict(re.findall(r"^<!-- example: (\S+) -->\n```python\n(.*?)^```", page.read_text(),
                           re.M | re.S))


def test_contributing_worked_example_runs(monkeypatch):
    """CONTRIBUTING.md's new defense, exactly as printed: its module (loaded as if saved at its
    path), its registry entry (added to the real registry) and its test, run on today's code."""
    import fedsafe.defenses as defenses

    blocks = examples(ROOT / "CONTRIBUTING.md")
    module_file = next(p for p in blocks if p.startswith("src/fedsafe/defenses/")
                       and not p.endswith("__init__.py"))
    entries = eval(compile("{" + blocks["src/fedsafe/defenses/__init__.py"] + "}",
                           "CONTRIBUTING.md registry entry", "eval"), vars(defenses))
    # the entry points at the module the guide tells you to write
    module_name = module_file.removeprefix("src/").removesuffix(".py").replace("/", ".")
    assert {spec.impl.split(":")[0] for spec in entries.values()} == {module_name}
    module = types.ModuleType(module_name)
    monkeypatch.setitem(sys.modules, module_name, module)
    exec(compile(blocks[module_file], module_file, "exec"), vars(module))
    for name, spec in entries.items():
        assert name not in defenses.MECHANISMS.entries, f"the example's id {name!r} is taken: rename it"
        monkeypatch.setitem(defenses.MECHANISMS.entries, name, spec)
    test_module = {}
    exec(compile(blocks["tests/test_defenses.py"], "CONTRIBUTING.md test", "exec"), test_module)
    tests = [f for name, f in test_module.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()
