"""The README stays true to what points at it."""

from __future__ import annotations

import re

from fer_core.settings import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"


def readme_sections() -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", README.read_text(encoding="utf-8"), re.M)}


def test_every_readme_section_the_requirements_name_exists() -> None:
    named = {
        (path.name, m.group(1))
        for path in PROJECT_ROOT.glob("requirements*.txt")
        for m in re.finditer(r'README "([^"]+)"', path.read_text(encoding="utf-8"))
    }
    assert named, "the requirements files point to the README for their ranges"
    missing = {(file, section) for file, section in named if section not in readme_sections()}
    assert not missing, f"sections named but not in README.md: {missing}"


def test_every_runtime_package_is_explained_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    dependencies = text[text.index("## Dependencies"):]
    packages = [re.split(r"[<>=~!\[ ]", line, maxsplit=1)[0]
                for line in (PROJECT_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
                if line and not line.startswith(("#", "-"))]
    assert [p for p in packages if f"`{p}`" not in dependencies] == []
