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
