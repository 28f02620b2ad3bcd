"""The package's shape: wings by job, imports one way (from the commands down to the flows)."""
import ast
from pathlib import Path

import fvae

PACKAGE = Path(fvae.__file__).parent
# each wing may import only the wings below it (and the loose modules config, fp32, version)
LAYERS = ("flows", "models", "data", "scoring", "training", "commands")
LOOSE_BELOW_EVERYTHING = {"fvae.config", "fvae.errors", "fvae.fp32", "fvae.version"}
# what each loose module may import: the errors and the version nothing; the config the block names
# of the flows' registry (its choices); the presets the config; cli and the package anything
LOOSE_IMPORTS = {
    "fvae.errors": set(), "fvae.version": set(), "fvae.fp32": set(),
    "fvae.config": {"fvae.errors", "fvae.flows.registry", "fvae.flows.registry.block_names"},
    "fvae.presets": {"fvae.config", "fvae.errors"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every fvae module ``path`` imports, at its top or inside a function (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fvae")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fvae") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_itself_back_through_a_cycle():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            # a package's __init__ importing its own modules is how packages work, not a cycle
            if nxt == node or (state.get(nxt) == 1 and node.startswith(nxt + ".") and nxt in edges
                               and (PACKAGE.parent / nxt.replace(".", "/") / "__init__.py").exists()):
                continue
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])


def test_wings_import_only_the_wings_below_them():
    for module, imported in graph().items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] not in LAYERS:
            continue
        level = LAYERS.index(parts[1])
        for name in imported:
            target = name.split(".")
            if name in LOOSE_BELOW_EVERYTHING or len(target) < 2:
                continue
            if target[1] in LAYERS:
                assert LAYERS.index(target[1]) <= level, f"{module} imports {name}, a wing above it"
            else:  # loose modules other than config/fp32/version sit above the wings
                assert parts[1] == "commands" or name == "fvae.presets" and parts[1] in ("training", "commands"), \
                    f"{module} imports the loose module {name}"


def test_loose_modules_import_only_what_sits_below_them():
    edges = graph()
    loose = {module_name(p) for p in PACKAGE.glob("*.py")} - {"fvae", "fvae.__main__", "fvae.cli"}
    assert loose == set(LOOSE_IMPORTS), "a new loose module: say what it may import in LOOSE_IMPORTS"
    for module, allowed in LOOSE_IMPORTS.items():
        imported = {name for name in edges[module] if not name.startswith(module + ".")}
        # a name imported from an allowed module is that module's
        extra = {name for name in imported if name not in allowed and name.rsplit(".", 1)[0] not in allowed}
        assert not extra, f"{module} imports {sorted(extra)}"


def test_at_most_six_loose_modules_and_at_least_five_wings():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "version.py", "__main__.py")]
    wings = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    assert len(loose) <= 6, loose
    assert len(wings) >= 5, wings
