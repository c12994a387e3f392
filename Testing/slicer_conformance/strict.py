"""Strict PythonQt-like object model shared by every stand-in.

Why: Slicer modules talk to C++ widgets through PythonQt.  The stand-ins must behave like those
wrappers (properties as attributes, signals with connect/disconnect, string-form
``obj.connect("sig(args)", f)``) and must refuse any member the real class lacks.  The allowed
names come from :mod:`qtapi`; behaviour a class really has is written as ordinary methods (and
``_get_<prop>`` / ``_set_<prop>`` hooks) on the concrete stand-in classes in :mod:`widgets`.
A member the real class has but that no stand-in implements is a recorded no-op (or raises
NotImplementedError when the session is built with ``unemulated="raise"``).
"""

from __future__ import annotations

import inspect
import logging
import traceback

from . import qtapi

_DEFAULTS_BY_TYPE = {"bool": False, "QString": "", "int": 0, "double": 0.0, "float": 0.0, "QStringList": [],
                     "uint": 0, "qreal": 0.0}


class Hooks:
    """Session-wide policy (set by the session): what to do with unemulated calls and slot errors."""

    unemulated = "raise"  # or "record"
    unemulated_calls: list = []
    slot_exceptions = "raise"  # or "record"
    slot_errors: list = []


def _arity(func):
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    n = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n


def call_slot(func, args):
    """Call a Python slot the way PythonQt does: with as many signal arguments as it accepts."""
    n = _arity(func)
    if n is not None:
        args = args[:n]
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001 - PythonQt prints and swallows; we raise or record
        if Hooks.slot_exceptions == "raise":
            raise
        Hooks.slot_errors.append((func, exc, traceback.format_exc()))
        logging.error("Exception in slot %r:\n%s", func, traceback.format_exc())


class BoundSignal:
    """A signal of one object: ``sig.connect(f)``, ``sig.disconnect(f)``, ``sig.emit(*args)``.
    Holds slots per overload; attribute-form connect uses the first declared overload."""

    def __init__(self, owner, name, signatures):
        self._owner, self._name, self._sigs = owner, name, list(signatures)
        self._slots = {s: [] for s in self._sigs}

    def _resolve(self, signature=None):
        if signature is None:
            return self._sigs[0]
        if signature not in self._slots:
            raise AttributeError(f"{type(self._owner).__name__} has no signal {signature!r} "
                                 f"(declared: {self._sigs})")
        return signature

    def connect(self, func, signature=None):
        if not callable(func):
            raise TypeError(f"connect() needs a callable, got {func!r}")
        self._slots[self._resolve(signature)].append(func)
        return True

    def disconnect(self, func=None, signature=None):
        slots = self._slots[self._resolve(signature)]
        if func is None:
            slots.clear()
            return True
        for i, f in enumerate(slots):
            if f == func:
                del slots[i]
                return True
        raise RuntimeError(f"{type(self._owner).__name__}.{self._name}: disconnect() of a slot that is not connected")

    def emit(self, *args, signature=None):
        if getattr(self._owner, "_blocked", False):
            return
        sigs = [self._resolve(signature)] if signature else self._sigs
        for s in sigs:
            nargs = s.count(",") + 1 if not s.endswith("()") else 0
            if nargs > len(args):
                continue
            for f in list(self._slots[s]):
                call_slot(f, args[:nargs])

    def connected(self, signature=None):
        return list(self._slots[self._resolve(signature)])

    def __call__(self, *args):
        raise TypeError(f"{self._name} is a signal; use .connect()/.emit()")


def _split_signature(sig: str):
    sig = qtapi.normalize_signature(sig)
    return sig.split("(")[0], sig


class StandinMeta(type):
    """Class-level strictness: ``qt.QMessageBox.Ok`` resolves enum members from the real API,
    ``qt.QPushButton.setTextt`` raises."""

    def __getattr__(cls, name):
        if name.startswith("_"):
            raise AttributeError(name)
        api = cls._api()
        if name in api.enums:
            return api.enums[name]
        kind, owner = cls._api_source
        if kind == "qt":
            try:
                return qtapi.qt_enum_value(owner, name)
            except (AttributeError, KeyError):
                pass
        raise AttributeError(f"type object '{cls.__name__}' has no attribute '{name}' (not in the real {api.cls_name})")


class StrictQObject(metaclass=StandinMeta):
    """Base of every QObject stand-in.  ``_api_source`` = ("qt", "QPushButton") or ("header", "ctkPathLineEdit")
    or ("app", ...).  Subclasses written by module code (``class MyWidget(qt.QWidget)``) may define
    their own members freely, as with PythonQt."""

    _api_source = ("qt", "QObject")
    _is_standin = True
    _prop_defaults: dict = {}

    # ------------------------------------------------------------------ api
    @classmethod
    def _build_api(cls):
        if "_api_cache" in cls.__dict__:
            return cls.__dict__["_api_cache"]
        kind, name = cls._api_source
        if kind == "qt":
            api = qtapi.qt_api(name)
        elif kind == "header":
            api = qtapi.header_api(name)
        else:
            api = getattr(qtapi, name)()
        api.properties.setdefault("name", ("QString", True))
        api.methods |= {"className"}
        cls._api_cache = api
        # every public method implemented on a stand-in class must exist in the real API
        for klass in cls.__mro__:
            if klass.__dict__.get("_is_standin") is not True:
                continue
            for attr, val in klass.__dict__.items():
                if attr.startswith("_") or not (callable(val) or isinstance(val, (staticmethod, classmethod))):
                    continue
                if not api.allows(attr) and attr not in getattr(cls, "_static_members", ()):
                    raise TypeError(f"stand-in {cls.__name__} implements {attr!r}, which the real "
                                    f"{name} does not declare ({api.source})")
        return api

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("_is_standin") is None:
            cls._is_standin = False  # a user subclass

    def __init__(self, *args, **kwargs):
        parent = None
        if args and (isinstance(args[-1], StrictQObject) or args[-1] is None):
            parent = args[-1]
        object.__setattr__(self, "_props", {})
        object.__setattr__(self, "_dyn", {})
        object.__setattr__(self, "_signals", {})
        object.__setattr__(self, "_children", [])
        object.__setattr__(self, "_parent", None)
        object.__setattr__(self, "_blocked", False)
        api = type(self)._api()
        for pname, (ptype, _w) in api.properties.items():
            if pname in self._prop_defaults:
                val = self._prop_defaults[pname]
            else:
                val = _DEFAULTS_BY_TYPE.get(ptype)
            self._props[pname] = list(val) if isinstance(val, list) else val
        self._props["objectName"] = ""
        if parent is not None:
            self.setParent(parent)

    @classmethod
    def _api(cls):
        for klass in cls.__mro__:
            if klass.__dict__.get("_is_standin") is True:
                return klass._build_api()
        raise TypeError("no stand-in base")

    def _standin_class(self):
        for klass in type(self).__mro__:
            if klass.__dict__.get("_is_standin") is True:
                return klass
        return type(self)

    def _user_defined(self, name):
        if name in self.__dict__:
            return True
        for klass in type(self).__mro__:
            if klass.__dict__.get("_is_standin") is True:
                return False
            if name in klass.__dict__:
                return True
        return False

    # ------------------------------------------------------------------ attribute protocol
    def __getattribute__(self, name):
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        if object.__getattribute__(self, "_user_defined")(name):
            return object.__getattribute__(self, name)
        api = type(self)._api()
        if name in api.properties:
            getter = getattr(type(self), f"_get_{name}", None)
            if getter is not None:
                return getter(self)
            if name == "name":
                return object.__getattribute__(self, "_props")["objectName"]
            return object.__getattribute__(self, "_props").get(name)
        if name in api.signals:
            sigs = object.__getattribute__(self, "_signals")
            if name not in sigs:
                sigs[name] = BoundSignal(self, name, api.signals[name])
            return sigs[name]
        if name in api.methods or name in getattr(type(self), "_static_members", ()):
            try:
                return object.__getattribute__(self, name)
            except AttributeError:
                return self._fallback_method(name, api)
        raise AttributeError(f"{self._standin_class().__name__} has no attribute '{name}' "
                             f"(not declared by the real {api.cls_name}; {api.source})")

    def __setattr__(self, name, value):
        if name.startswith("_") or self._user_defined(name) and name not in type(self)._api().properties:
            object.__setattr__(self, name, value)
            return
        api = type(self)._api()
        if name in api.properties:
            if not api.properties[name][1]:
                raise AttributeError(f"{api.cls_name}.{name} is a read-only property")
            self._set_property(name, value)
            return
        if not self._standin_class() is type(self):  # user subclass: free Python attributes
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"{self._standin_class().__name__} has no attribute '{name}' "
                             f"(not declared by the real {api.cls_name}; {api.source})")

    def __delattr__(self, name):
        object.__delattr__(self, name)

    def _set_property(self, name, value):
        setter = getattr(type(self), f"_set_{name}", None)
        if setter is not None:
            setter(self, value)
        elif name == "name":
            self._props["objectName"] = value
        else:
            self._props[name] = value

    def _fallback_method(self, name, api):
        """An allowed member with no explicit emulation: property getters/setters work on the
        stored property; anything else is recorded (or raises in 'raise' mode)."""
        for prop in api.properties:
            cap = prop[:1].upper() + prop[1:]
            if name == f"set{cap}":
                return lambda value, _p=prop: self._set_property(_p, value)
            if name in (f"is{cap}", f"has{cap}", prop):
                return lambda _p=prop: getattr(self, _p)
        cls_name = self._standin_class().__name__

        def unemulated(*args, **kwargs):
            if Hooks.unemulated == "raise":
                raise NotImplementedError(f"{cls_name}.{name} exists in the real API but the stand-in does not emulate it")
            Hooks.unemulated_calls.append((cls_name, name, args))
            return None
        return unemulated

    def __repr__(self):
        return f"<{type(self).__name__} stand-in '{self._props.get('objectName', '')}'>"

    def __bool__(self):
        return True

    # ------------------------------------------------------------------ QObject behaviour
    def setObjectName(self, name):
        self._props["objectName"] = name

    def className(self):
        return self._standin_class().__name__

    def inherits(self, class_name):
        return any(k.__name__ == class_name for k in type(self).__mro__) or class_name in (
            self._extra_inherits() if hasattr(type(self), "_extra_inherits") else ())

    def isWidgetType(self):
        return False

    def parent(self):
        return self._parent

    def setParent(self, parent, *flags):
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        object.__setattr__(self, "_parent", parent)
        if parent is not None and self not in parent._children:
            parent._children.append(self)

    def children(self):
        return list(self._children)

    def findChildren(self, cls=None, name=None):
        out = []
        stack = list(self._children)
        while stack:
            c = stack.pop(0)
            if (cls is None or isinstance(c, cls)) and (not name or c._props.get("objectName") == name):
                out.append(c)
            stack[0:0] = c._children
        return out

    def findChild(self, cls=None, name=None):
        found = self.findChildren(cls, name)
        return found[0] if found else None

    def property(self, name):
        api = type(self)._api()
        if name in api.properties:
            return getattr(self, name)
        return self._dyn.get(name)

    def setProperty(self, name, value):
        api = type(self)._api()
        if name in api.properties:
            self._set_property(name, value)
            return True
        self._dyn[name] = value
        return False

    def dynamicPropertyNames(self):
        return list(self._dyn)

    def blockSignals(self, block):
        old = self._blocked
        object.__setattr__(self, "_blocked", bool(block))
        return old

    def signalsBlocked(self):
        return self._blocked

    def deleteLater(self):
        object.__setattr__(self, "_deleted", True)

    def connect(self, *args):
        """PythonQt string form: ``obj.connect("clicked()", f)`` (also ``(sender, sig, receiver, slot)``)."""
        if len(args) == 2 and isinstance(args[0], str):
            sig_name, sig = _split_signature(args[0])
            signal = getattr(self, sig_name) if sig_name in type(self)._api().signals else None
            if signal is None:
                raise AttributeError(f"{self.className()} has no signal {args[0]!r}")
            return signal.connect(args[1], signature=sig)
        if len(args) == 4 and isinstance(args[1], str):
            sender, sig, receiver, slot = args
            sig_name, sig = _split_signature(sig)
            slot_name = slot.split("(")[0]
            return getattr(sender, sig_name).connect(getattr(receiver, slot_name), signature=sig)
        raise TypeError(f"unsupported connect{args!r}")

    def disconnect(self, *args):
        if len(args) == 2 and isinstance(args[0], str):
            sig_name, sig = _split_signature(args[0])
            return getattr(self, sig_name).disconnect(args[1], signature=sig)
        raise TypeError(f"unsupported disconnect{args!r}")

    def _emit(self, name, *args, signature=None):
        getattr(self, name).emit(*args, signature=signature)

    def delete(self):
        object.__setattr__(self, "_deleted", True)
