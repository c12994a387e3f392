"""The package's layers import one way: training and propagation may use inference, training may use correction
(its simulated clicks) and correction may use inference, nothing below imports what sits above it, so no import cycle runs training -> propagation -> inference -> training (a cycle that
made import order matter and tied inference to the trainer)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "Training" / "diffumamba"
LAYERS = ("training", "propagation", "correction", "inference")
FORBIDDEN = {("inference", "training"), ("inference", "propagation"), ("training", "propagation"),
             ("inference", "correction"), ("correction", "training"), ("correction", "propagation")}


def imported_layers(path: Path) -> set:
    """The sub-packages a module imports (at module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = path.relative_to(PACKAGE).parts[:-1]
            base = list(parts[:len(parts) - node.level + 1]) if node.level > 1 else list(parts)
            target = base + (node.module.split(".") if node.module else [])
            if target and target[0] in LAYERS:
                found.add(target[0])
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                parts = name.split(".")
                if parts[0] == "diffumamba" and len(parts) > 1 and parts[1] in LAYERS:
                    found.add(parts[1])
    return found


def test_no_layer_imports_a_layer_above_it():
    for layer in LAYERS:
        for path in (PACKAGE / layer).rglob("*.py"):
            for target in imported_layers(path):
                assert (layer, target) not in FORBIDDEN, f"{path.relative_to(PACKAGE)} imports diffumamba.{target}"


def test_the_package_never_imports_nnunet_or_the_gui():
    """nnunetv2 and dynamic-network-architectures are test dependencies (the import-nnunet tests build the official
    networks from them); the package reads nnU-Net's files itself. Slicer, Qt, CTK and VTK belong to the module."""
    banned = {"nnunetv2", "dynamic_network_architectures", "slicer", "qt", "ctk", "vtk"}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.relative_to(PACKAGE)} imports {name}"


LIB = PACKAGE.parents[1] / "DiffUMambaSeg" / "DiffUMambaSegLib"


def module_names(root: Path) -> dict:
    """Dotted module name -> file, for every file of the package at ``root``."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_modules(name: str, path: Path, known: dict) -> set:
    """The package's modules ``name`` imports, at any depth of the file, with the packages whose ``__init__`` an
    import runs first (its own ancestors excepted)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            for alias in node.names:
                found |= {f"{base}.{alias.name}"} & set(known) or ({base} & set(known))
    for target in list(found):
        parts = target.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts))
                  if ".".join(parts[:i]) in known and not name.startswith(".".join(parts[:i]))}
    return found - {name}


def import_cycles(root: Path) -> list:
    """The groups of modules that import each other, directly or through others (strongly connected components
    of more than one module, Tarjan's algorithm)."""
    known = module_names(root)
    graph = {name: imported_modules(name, path, known) for name, path in known.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_file_imports_a_file_that_imports_it():
    """Issue 34: the package and the module's Lib read top-down; a name shared by two files lives in a lower one."""
    for root in (PACKAGE, LIB):
        assert import_cycles(root) == [], root.name


def test_the_cycle_finder_finds_a_cycle_through_a_third_file(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import x\n")
    (package / "b.py").write_text("def f():\n    from . import c\nx = 1\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from .a import x\n")
    assert import_cycles(package) == [["pkg.a", "pkg.b", "pkg.c"]]
