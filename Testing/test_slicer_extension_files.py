"""Static checks of the Slicer extension that need no Slicer: the CMake scripts parse and list every file,
the widget uses only names the .ui defines, parameter names match the parameter node, the Lib package does
not import Qt, and user-facing module texts are translatable."""

import ast
import json
import re
import shutil
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


def _settings(commands):
    return {args[0]: " ".join(args[1:]).strip('"') for name, args in commands if name == "set"}


def test_top_level_cmake_is_an_extension():
    commands = cmake_commands(REPO / "CMakeLists.txt")
    settings = _settings(commands)
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_DEPENDS"):
        assert settings.get(key), key
    assert settings["EXTENSION_DEPENDS"].split() == ["PyTorch"]          # SlicerRT is optional (issue 13)
    assert ("project", ["DiffUMambaSeg"]) in commands and ("add_subdirectory", ["DiffUMambaSeg"]) in commands
    entry = json.loads((REPO / "DiffUMambaSeg.json").read_text())                # the Extensions Index entry
    assert entry["build_dependencies"] == settings["EXTENSION_DEPENDS"].split() and entry["category"] == "Segmentation"
    prefix = "https://raw.githubusercontent.com/DiffUMambaSeg/SlicerDiffUMambaSeg/main/"
    for url in [settings["EXTENSION_ICONURL"], *settings["EXTENSION_SCREENSHOTURLS"].split()]:
        assert url.startswith(prefix) and (REPO / url[len(prefix):]).is_file(), url
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()


def test_cmake_follows_the_slicer_5_12_extension_template():
    """Review C4: the policy range of Slicer 5.12 and its extension template (3.28.0...3.28.0, so newer policies are
    NEW, not OLD with dev warnings), and the extension's own licence and README in the package: unset, UseSlicer.cmake
    (381-385) would package Slicer's License.txt. Both must be set before include(${Slicer_USE_FILE}) reads them."""
    commands = cmake_commands(REPO / "CMakeLists.txt")
    assert commands[0] == ("cmake_minimum_required", ["VERSION", "3.28.0...3.28.0", "FATAL_ERROR"])
    settings = _settings(commands)
    assert settings["EXTENSION_LICENSE_FILE"] == "${CMAKE_CURRENT_SOURCE_DIR}/LICENSE"
    assert settings["EXTENSION_README_FILE"] == "${CMAKE_CURRENT_SOURCE_DIR}/README.md"
    assert (REPO / "LICENSE").is_file() and (REPO / "README.md").is_file()
    use_file = commands.index(("include", ["${Slicer_USE_FILE}"]))
    for key in ("EXTENSION_LICENSE_FILE", "EXTENSION_README_FILE"):
        assert next(i for i, (name, args) in enumerate(commands) if name == "set" and args[0] == key) < use_file


def test_extension_metadata_names_no_template_placeholder_and_no_fake_screenshot():
    """Review C5: contributors in the Extensions Index's "Name (Organization)" form, the same in the module; no
    screenshot URL pointing at the README's matplotlib renderings (they say "not a 3D Slicer screenshot")."""
    settings = _settings(cmake_commands(REPO / "CMakeLists.txt"))
    contributors = settings["EXTENSION_CONTRIBUTORS"]
    assert re.fullmatch(r"[^()]+ \([^()]+\)", contributors), contributors
    assert not any(p in contributors for p in ("Firstname", "Lastname", "John Doe", "AnyWare", "Organization"))
    module = {node.targets[0].attr: ast.literal_eval(node.value) for node in ast.walk(module_tree())
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)
              and node.targets[0].attr == "contributors"}
    assert module["contributors"] == [contributors]
    assert "Resources/Screenshots/" not in settings["EXTENSION_SCREENSHOTURLS"]
    assert "not a 3D Slicer screenshot" in (REPO / "docs" / "pictures.md").read_text() or \
        "matplotlib" in (REPO / "docs" / "pictures.md").read_text()


def test_the_licence_of_every_shipped_model_is_stated():
    """Review C5: the extension (Apache-2.0) ships CC-BY-NC models; the README's licence line and the Models section
    of docs/slicer.md say so."""
    catalog = json.loads((MODULE / "Resources" / "Models.json").read_text())["models"]
    shipped = {m["license"] for m in catalog if not m["url"].startswith(("http://", "https://"))}
    assert shipped == {"CC-BY-NC-3.0"}
    readme_line = next(line for line in (REPO / "README.md").read_text().splitlines() if "`LICENSE`" in line)
    models_section = next(line for line in (REPO / "docs" / "slicer.md").read_text().split("\n- **")
                          if line.startswith("Models**"))
    for text in (readme_line, models_section):
        assert "Apache-2.0" in text and all(licence in text for licence in shipped), text
        assert "non-commercial" in text


def test_the_package_is_installed_once_and_copied_at_build_time():
    """Review C4: ctkMacroCompilePythonScript already installs the whole build-tree module folder, so an
    install() of Resources/Training packages it twice; a configure-time copy (configure_file over a GLOB without
    CONFIGURE_DEPENDS) misses added files and keeps deleted ones until CMake is re-run."""
    commands = cmake_commands(MODULE / "CMakeLists.txt")
    assert not [args for name, args in commands if name == "install"]
    assert not [args for name, args in commands if name == "configure_file"]
    globs = [args for name, args in commands if name == "file" and args[0] == "GLOB_RECURSE"]
    assert globs and all("CONFIGURE_DEPENDS" in args for args in globs)
    targets = [args for name, args in commands if name == "add_custom_target"]
    assert any("ALL" in args for args in targets)


def _configure_module_alone(source, build):
    """DiffUMambaSeg/CMakeLists.txt under a stand-in top level: the two Slicer macros it calls are empty functions
    (they add the module's own files, not the package), the module folder variable is Slicer's layout."""
    import subprocess

    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.20)\nproject(ModuleOnly NONE)\n"
        "set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.12/qt-scripted-modules)\n"
        "function(slicerMacroBuildScriptedModule)\nendfunction()\nfunction(slicer_add_python_unittest)\nendfunction()\n"
        "add_subdirectory(DiffUMambaSeg)\n")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), *generator], check=True, capture_output=True)
    return lambda: subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, text=True)


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_build_copies_added_package_files_and_drops_removed_and_stale_ones(tmp_path):
    """The real CMake builds the module's package copy twice; between the builds a package file is added, one is
    deleted and a stale __pycache__ is left in the build tree (a test run there). The second build, without
    re-running CMake by hand, leaves exactly the package's files. Without cmake it fails (never a silent skip)."""
    assert shutil.which("cmake"), "cmake is not installed: `apt-get install -y cmake` (scripts/install.sh does it as root)"
    source = tmp_path / "src"
    (source / "DiffUMambaSeg").mkdir(parents=True)
    shutil.copy(MODULE / "CMakeLists.txt", source / "DiffUMambaSeg" / "CMakeLists.txt")
    shutil.copytree(REPO / "Training" / "diffumamba", source / "Training" / "diffumamba",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / "Training" / name, source / "Training" / name)
    build = _configure_module_alone(source, tmp_path / "build")
    build()
    copied = tmp_path / "build" / "lib" / "Slicer-5.12" / "qt-scripted-modules" / "Resources" / "Training"
    assert _tree(copied) == _tree(source / "Training")
    (source / "Training" / "diffumamba" / "added_later.py").write_text("VALUE = 1\n")
    (source / "Training" / "diffumamba" / "devices.py").unlink()
    (copied / "diffumamba" / "__pycache__").mkdir(exist_ok=True)
    (copied / "diffumamba" / "__pycache__" / "devices.cpython-312.pyc").write_bytes(b"stale")
    build()
    assert _tree(copied) == _tree(source / "Training")
    assert (copied / "diffumamba" / "added_later.py").read_text() == "VALUE = 1\n"


def test_slicerrt_is_optional_everywhere():
    """The index entry and CMake do not require SlicerRT, and the module only reaches it through
    slicer.modules.dicomPlugins (absent -> a message naming the alternative)."""
    entry = json.loads((REPO / "DiffUMambaSeg.json").read_text())
    assert "SlicerRT" not in entry["build_dependencies"]
    for path in [MODULE / "DiffUMambaSeg.py", *(MODULE / "DiffUMambaSegLib").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any("SlicerRT" in n or "DicomRtImportExport" in n for n in names), path


def test_no_tracked_file_is_ignored():
    import subprocess

    ignored = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    assert ignored == []


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
    panels = [ast.parse((MODULE / "DiffUMambaSegLib" / name).read_text())
              for name in ("panel.py", "correction_panel.py")]
    used = {node.attr for tree in (module_tree(), *panels) for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and (isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                 or isinstance(node.value, ast.Name) and node.value.id == "ui")}
    assert used and used <= widgets, used - widgets


def test_ui_parameters_are_fields_of_the_parameter_node():
    _, parameters = ui_names()
    node = next(n for n in ast.walk(module_tree()) if isinstance(n, ast.ClassDef) and n.name == "DiffUMambaSegParameterNode")
    fields = {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    assert parameters and parameters <= fields, parameters - fields


def _lib_logic():
    import sys

    sys.path.insert(0, str(MODULE))
    from DiffUMambaSegLib import logic

    return logic


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
                choices[item.target.id] = list(eval(compile(ast.Expression(calls[0].args[0]), "choice", "eval"),
                                                    {"logic": _lib_logic()}))
    assert combos and set(combos) <= set(choices)
    for name, items in combos.items():
        assert items == choices[name], name


def test_the_lib_package_never_imports_qt_and_the_core_never_imports_slicer():
    """panel.py (the buttons and timers) is the Lib's one Qt file; the rest runs and is tested without Qt."""
    lib = [p for p in (MODULE / "DiffUMambaSegLib").glob("*.py") if p.name != "panel.py"]
    for path in lib + list((REPO / "Training").rglob("*.py")):
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


def test_the_ui_keeps_its_spacer_at_the_bottom():
    """A spacer between sections pushes the editor and export down and leaves a gap in the panel."""
    tree = ElementTree.parse(MODULE / "Resources" / "UI" / "DiffUMambaSeg.ui")
    main = tree.find("widget/layout")
    items = main.findall("item")
    spacers = [i for i, item in enumerate(items) if item.find("spacer") is not None]
    assert spacers == [len(items) - 1]
