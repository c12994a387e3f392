"""Static checks of the Slicer extension that need no Slicer: the CMake scripts parse and list every file,
the widget uses only names the .ui defines, parameter names match the parameter node, the Lib package does
not import Qt, and user-facing module texts are translatable."""

import ast
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "DiffUMambaSeg"


def cmake_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(command, arguments) of a CMake script; raises on unbalanced parentheses or quotes."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    commands, position = [], 0
    pattern = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")
    while position < len(text):
        if not text[position:].strip():
            break
        match = pattern.match(text, position)
        assert match, f"{path.name}: cannot parse near {text[position:position + 40]!r}"
        depth, index, quoted = 1, match.end(), False
        while depth:
            assert index < len(text), f"{path.name}: unbalanced parentheses in {match.group(1)}"
            char = text[index]
            if char == '"':
                quoted = not quoted
            elif not quoted and char == "(":
                depth += 1
            elif not quoted and char == ")":
                depth -= 1
            index += 1
        body = text[match.end():index - 1]
        commands.append((match.group(1).lower(), re.findall(r'"[^"]*"|[^\s"]+', body)))
        position = index
    return commands


def test_top_level_cmake_is_an_extension():
    commands = cmake_commands(REPO / "CMakeLists.txt")
    settings = {args[0]: " ".join(args[1:]).strip('"') for name, args in commands if name == "set"}
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert settings.get(key), key
    assert settings["EXTENSION_DEPENDS"].split() == ["PyTorch", "SlicerRT"]
    assert ("project", ["DiffUMambaSeg"]) in commands and ("add_subdirectory", ["DiffUMambaSeg"]) in commands
    entry = json.loads((REPO / "DiffUMambaSeg.json").read_text())                # the Extensions Index entry
    assert entry["build_dependencies"] == settings["EXTENSION_DEPENDS"].split() and entry["category"] == "Segmentation"
    assert (REPO / "DiffUMambaSeg.png").is_file()


def test_module_cmake_lists_every_file_and_only_existing_ones():
    commands = cmake_commands(MODULE / "CMakeLists.txt")
    lists = {args[0]: [a.replace("${MODULE_NAME}", "DiffUMambaSeg") for a in args[1:]]
             for name, args in commands if name == "set" and len(args) > 1}
    scripts, resources = lists["MODULE_PYTHON_SCRIPTS"], lists["MODULE_PYTHON_RESOURCES"]
    for listed in scripts + resources:
        assert (MODULE / listed).is_file(), f"listed but missing: {listed}"
    on_disk = sorted(str(p.relative_to(MODULE)) for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts)
    assert sorted(scripts) == on_disk
    shipped = sorted(str(p.relative_to(MODULE)) for p in (MODULE / "Resources").rglob("*") if p.is_file())
    assert sorted(resources) == shipped
    assert any(name == "slicermacrobuildscriptedmodule" for name, _ in commands)


def ui_names():
    tree = ElementTree.parse(MODULE / "Resources" / "UI" / "DiffUMambaSeg.ui")
    widgets = {w.get("name") for w in tree.iter("widget")}
    parameters = {p.find("string").text for w in tree.iter("widget") for p in w.findall("property")
                  if p.get("name") == "SlicerParameterName"}
    return widgets, parameters


def module_tree():
    return ast.parse((MODULE / "DiffUMambaSeg.py").read_text())


def test_the_widget_uses_only_widgets_of_the_ui():
    widgets, _ = ui_names()
    used = {node.attr for node in ast.walk(module_tree()) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    assert used and used <= widgets, used - widgets


def test_ui_parameters_are_fields_of_the_parameter_node():
    _, parameters = ui_names()
    node = next(n for n in ast.walk(module_tree()) if isinstance(n, ast.ClassDef) and n.name == "DiffUMambaSegParameterNode")
    fields = {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    assert parameters and parameters <= fields, parameters - fields


def test_combo_box_items_are_the_parameter_choices():
    """A combo box bound to a Choice field must offer exactly its values, or the binding silently fails."""
    tree = ElementTree.parse(MODULE / "Resources" / "UI" / "DiffUMambaSeg.ui")
    combos = {}
    for widget in tree.iter("widget"):
        bound = [p.find("string").text for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]
        if widget.get("class") == "QComboBox" and bound:
            combos[bound[0]] = [item.find("property/string").text for item in widget.findall("item")]
    node = next(n for n in ast.walk(module_tree()) if isinstance(n, ast.ClassDef) and n.name == "DiffUMambaSegParameterNode")
    choices = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign):
            calls = [c for c in ast.walk(item.annotation) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Choice"]
            if calls:
                choices[item.target.id] = [e.value for e in calls[0].args[0].elts]
    assert combos and set(combos) <= set(choices)
    for name, items in combos.items():
        assert items == choices[name], name


def test_the_lib_package_never_imports_qt_and_the_core_never_imports_slicer():
    for path in list((MODULE / "DiffUMambaSegLib").glob("*.py")) + list((REPO / "Training").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            forbidden = ("qt", "ctk", "slicer", "vtk") if "Training" in path.parts else ("qt", "ctk")
            assert not any(n.split(".")[0] in forbidden for n in names), f"{path}: imports {names}"


def test_the_module_loads_on_the_python_of_older_slicer_releases():
    """Slicer before 5.12 carries Python 3.9: the module and its Lib must still load there (and then say that the
    package needs a newer Slicer) rather than fail with a SyntaxError while Slicer starts."""
    for path in [MODULE / "DiffUMambaSeg.py", *(MODULE / "DiffUMambaSegLib").glob("*.py")]:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_module_texts_are_translatable():
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute) and \
                node.targets[0].attr in ("title", "helpText", "acknowledgementText"):
            assert isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "_", node.targets[0].attr


def test_the_terminology_file_codes_the_gtv_as_the_segments_are_coded():
    import sys

    sys.path.insert(0, str(MODULE))
    from DiffUMambaSegLib.scene import GTV_TERMINOLOGY

    terminology = json.loads((MODULE / "Resources" / "DiffUMambaSeg.term.json").read_text())
    context, category, kind = GTV_TERMINOLOGY.split("~")[:3]
    assert terminology["SegmentationCategoryTypeContextName"] == context
    coded_category = terminology["SegmentationCodes"]["Category"][0]
    coded_type = coded_category["Type"][0]
    assert category.split("^")[:2] == [coded_category["CodingSchemeDesignator"], coded_category["CodeValue"]]
    assert kind.split("^")[:2] == [coded_type["CodingSchemeDesignator"], coded_type["CodeValue"]] == ["SCT", "86049000"]
    assert coded_type["recommendedDisplayRGBValue"] == [255, 0, 0]
