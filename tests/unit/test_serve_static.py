"""The page of `trimdm serve` ships with the package (pyproject's package-data), loads nothing from
elsewhere, and its script finds every element it names."""
import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "trimdm" / "serve" / "static"


def test_every_static_file_is_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["trimdm.serve"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert {"static/index.html", "static/app.js", "static/style.css"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []


def test_the_page_loads_nothing_from_elsewhere():
    for path in STATIC.rglob("*"):
        text = path.read_text()
        assert not re.search(r"https?://|[\"'(]//[a-z]", text, re.I), f"{path.name} names another host"
        assert "@import" not in text and "import(" not in text
    html = (STATIC / "index.html").read_text()
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith("/") or url.startswith("data:"), url


def test_the_script_finds_every_element_it_names():
    html = (STATIC / "index.html").read_text()
    ids = set(re.findall(r'id="([^"]+)"', html))
    named = set(re.findall(r'\$\("([^"$]+)"\)', (STATIC / "app.js").read_text()))
    assert named and named <= ids, sorted(named - ids)
    panels = set(re.findall(r'data-panel="([^"]+)"', html))
    assert {f"panel-{p}" for p in panels} <= ids
    assert {f"{p}-live" for p in panels - {"about"}} <= ids and {f"{p}-outputs" for p in panels - {"about"}} <= ids
