"""Imports only go down the layers: data, ranking, policy, store, campaign, spark, then the
surfaces.

Each subpackage's ``__init__`` says what it holds and what it may import; this test holds
the code to it by reading every module's imports (its syntax tree: nothing is run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer and those below it, never one above.
LAYERS = (
    ("base", ("recommender", "recommender.exceptions")),
    ("data", ("recommender.data",)),
    ("monitoring", ("recommender.monitoring",)),
    ("ranking", ("recommender.ranking",)),
    ("policy", ("recommender.policy",)),
    ("store", ("recommender.store",)),
    ("campaign", ("recommender.campaign",)),
    ("spark", ("recommender.spark",)),
    ("service", ("recommender.service", "recommender.audit", "recommender.report",
                 "recommender.monitor")),
    ("surfaces", ("recommender.cli", "api")),
)


def layer_of(module: str) -> int:
    """The position in LAYERS of the layer that holds ``module`` (the longest prefix)."""
    best, rank = "", None
    for position, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, position
    if rank is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS")
    return rank


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) for each project module ``path`` imports, relative imports resolved."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from package import module`` imports the module: judge by the module.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found
            if name.split(".")[0] in ("recommender", "api")]


def upward_imports(files: list[Path], root: Path = ROOT) -> list[str]:
    wrong = []
    for path in files:
        own = layer_of(module_name(path, root))
        for line, name in imported(path, root):
            target = _existing(name, root)
            if layer_of(target) > own:
                wrong.append(f"{path.relative_to(root)}:{line} imports {target} "
                             f"({LAYERS[layer_of(target)][0]}, above "
                             f"{LAYERS[own][0]})")
    return wrong


def _existing(name: str, root: Path) -> str:
    """``name``, or the longest prefix of it that is a module or package of the project
    (``recommender.data.book.CustomerBook`` is ``recommender.data.book``)."""
    parts = name.split(".")
    while len(parts) > 1:
        base = root.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return parts[0]


def _sources() -> list[Path]:
    return sorted([*ROOT.joinpath("recommender").rglob("*.py"),
                   *ROOT.joinpath("api").rglob("*.py")])


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(_sources()) == []


def test_every_module_is_in_a_layer():
    for path in _sources():
        layer_of(module_name(path))


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in ROOT.joinpath("recommender").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "import" in doc and len(doc.splitlines()) >= 3, init


def test_an_upward_import_is_caught(tmp_path):
    """The check can fail: a data module importing the offer engine is named."""
    source = ROOT / "recommender" / "data" / "book.py"
    planted = tmp_path / "recommender" / "data" / "book.py"
    planted.parent.mkdir(parents=True)
    planted.write_text(source.read_text(encoding="utf-8")
                       + "\nfrom ..policy.offers import OfferEngine\n", encoding="utf-8")
    (tmp_path / "recommender" / "policy").mkdir()
    (tmp_path / "recommender" / "policy" / "offers.py").write_text("", encoding="utf-8")
    (wrong,) = upward_imports([planted], tmp_path)
    assert "recommender.policy.offers (policy, above data)" in wrong


@pytest.mark.parametrize(("module", "layer"), [
    ("recommender.data.book", "data"), ("recommender.ranking.cf", "ranking"),
    ("recommender.store.replay", "store"), ("recommender.exceptions", "base"),
    ("api.customers", "surfaces"), ("recommender.cli", "surfaces"),
])
def test_layer_of(module, layer):
    assert LAYERS[layer_of(module)][0] == layer
