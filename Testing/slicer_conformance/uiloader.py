"""``qt.QUiLoader``: builds a stand-in widget tree from a Qt Designer .ui file.

Why: slicer.util.loadUI (reference code) calls ``qt.QUiLoader().load(qt.QFile(path))``; the module
then finds its widgets with childWidgetVariables and binds them with connectGui.  The loader
resolves every ``class=`` against the session's ``qt``/``ctk``/``slicer`` stand-ins and sets every
``<property>`` through the strict attribute protocol, so an unknown class or property raises.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

from . import widgets
from .strict import StrictQObject


def _widget_class(name):
    for modname in ("qt", "ctk", "slicer"):
        mod = sys.modules.get(modname)
        cls = getattr(mod, name, None) if mod is not None else None
        if isinstance(cls, type) and issubclass(cls, StrictQObject):
            return cls
    raise RuntimeError(f"QUiLoader: unknown widget class {name!r} (no stand-in; Qt Designer would fail to "
                       "create it too unless its plugin is loaded)")


def _value(prop_el):
    v = list(prop_el)[0]
    tag = v.tag
    if tag in ("string", "cstring", "enum", "set"):
        return v.text or ""
    if tag == "bool":
        return (v.text or "").strip() == "true"
    if tag == "number":
        return int(v.text)
    if tag in ("double", "float"):
        return float(v.text)
    if tag == "stringlist":
        return [s.text or "" for s in v.findall("string")]
    if tag == "size":
        return widgets.QSize(int(v.findtext("width")), int(v.findtext("height")))
    if tag == "iconset":
        return widgets.QIcon(v.text or "")
    return None  # rect, font, sizepolicy, ...: accepted, value not modelled


class QUiLoader(widgets.QObject):
    _is_standin = True
    _api_source = ("qt", "QUiLoader")

    def load(self, qfile, parent=None):
        root = ET.parse(qfile.fileName()).getroot()
        top = root.find("widget")
        named = {}
        widget = self._build(top, parent, named)
        for c in root.findall("connections/connection"):
            sender, receiver = named[c.findtext("sender")], named[c.findtext("receiver")]
            signal, slot = c.findtext("signal"), c.findtext("slot")
            slot_name = slot.split("(")[0]
            sender.connect(signal, getattr(receiver, slot_name))
        return widget

    def _set_props(self, obj, el):
        for p in el.findall("property"):
            name = p.get("name")
            val = _value(p)
            if p.get("stdset") == "0":
                obj.setProperty(name, val)
                continue
            if name == "geometry" or val is None and name in type(obj)._api().properties:
                continue  # geometry/sizePolicy/font: layout details not modelled
            if name not in type(obj)._api().properties:
                raise RuntimeError(f"QUiLoader: {type(obj).__name__} has no property {name!r}")
            setattr(obj, name, val)

    def _build(self, el, parent, named):
        cls = _widget_class(el.get("class"))
        w = cls(parent) if parent is not None else cls()
        name = el.get("name", "")
        w.setObjectName(name)
        named[name] = w
        if isinstance(w, widgets.QComboBox):
            for item in el.findall("item"):
                w.addItem(_value(item.find("property")))
        self._set_props(w, el)
        lay = el.find("layout")
        if lay is not None:
            w.setLayout(self._build_layout(lay, w, named))
        for child in el.findall("widget"):
            self._build(child, w, named)
        return w

    def _build_layout(self, el, host, named):
        cls = _widget_class(el.get("class"))
        layout = cls()
        layout.setObjectName(el.get("name", ""))
        named[el.get("name", "")] = layout
        for item in el.findall("item"):
            child = list(item)[0]
            if child.tag == "widget":
                layout.addWidget(self._build(child, host, named))
            elif child.tag == "layout":
                layout._add_layout(self._build_layout(child, host, named))
            elif child.tag == "spacer":
                layout.addItem(widgets.QSpacerItem())
        return layout
