"""The package floors: `core` imports no other studio package, `data` never imports `engine`, and
only `ui` imports gradio. Read from the source (every import statement, top level or inside a
function), so a lazy import counts too."""

import ast
from pathlib import Path

import pytest

STUDIO = Path(__file__).resolve().parent.parent / "studio"


def imported_modules(package: str) -> dict[str, set[str]]:
    """file → every module it imports (absolute names)."""
    out = {}
    for path in sorted((STUDIO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(STUDIO.parent))] = names
    return out


@pytest.mark.parametrize("package, forbidden", [
    ("core", ("studio.data", "studio.engine", "studio.eval", "studio.ui", "studio.commands", "studio.config",
              "gradio")),
    ("data", ("studio.engine", "studio.eval", "studio.ui", "studio.commands", "gradio")),
    ("engine", ("studio.ui", "studio.commands", "gradio")),
    ("eval", ("studio.ui", "studio.commands", "gradio")),
])
def test_a_floor_imports_nothing_above_it(package, forbidden):
    offenders = {file: sorted(m for m in modules if m.startswith(forbidden))
                 for file, modules in imported_modules(package).items()}
    assert not {f: m for f, m in offenders.items() if m}


def test_the_folder_name_rule_is_written_once():
    rule = "[A-Za-z0-9._-]{0,99}"
    homes = [str(p.relative_to(STUDIO)) for p in STUDIO.rglob("*.py") if rule in p.read_text(encoding="utf-8")]
    assert homes == ["core/names.py"]


def test_the_moved_services_are_gone_from_engine_and_data():
    for old in ("engine/gpu_lock.py", "engine/device.py", "engine/tokenizer.py", "data/atomic.py"):
        assert not (STUDIO / old).exists(), old
