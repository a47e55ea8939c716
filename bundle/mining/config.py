"""A lean reader of bundle configs (configs/mine.yaml) for `python -m bundle.mining`: no monai, no torch.

Why: `python -m monai.bundle run` spends ~5 s importing monai (its __init__ loads every submodule, torch
among them) before mining starts; a scheduler that runs many short shard jobs pays that every time. MONAI's
ConfigParser cannot be imported on its own (monai.bundle pulls in monai.utils and torch: ~3 s), so this
reads the same YAML with the same meaning, for what mining configs use:

- `@id` (a whole value) is the resolved item; ids nest with `#` or `::`; items resolve lazily and once each
  (an unreferenced `dicomweb_source` is never built), so shared references are the same object;
- a dict with `_target_` (a dotted path, found with importlib) is called with its other keys, resolved
  (`_disabled_`, `_requires_`, `_desc_`, `_mode_` default/callable as in MONAI);
- `$import ...` / `$from ... import ...` strings run first; other `$` strings are evaluated by a small
  whitelist over Python's AST: names the imports bound, `@id`, literals, attribute access (no `_` names),
  calls, + - * / % and subscripts: enough for `$@bundle_root + '/data/mined'`, `$@miner.run()`;
- command-line values are read as Python literals, else kept as strings (as `fire` does for monai.bundle:
  `--workers 4` is 4, `--convert false` is 'false'); `--a#b v` sets a nested key.

Anything else raises `Unsupported`: one line that names it and points at `python -m monai.bundle run`.
A config is code either way (`_target_` calls any importable callable); run only configs you trust.
"""

from __future__ import annotations

import ast
import importlib
import json
import operator
import re
from functools import partial
from pathlib import Path
from typing import Any

REF = re.compile(r"@(\w+(?:(?:::|#)\w+)*)")
SEP = re.compile(r"::|#")
NON_ARGS = ("_target_", "_disabled_", "_requires_", "_desc_", "_mode_")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Mod: operator.mod}
_LAZY_GLOBALS = {"np": "numpy", "numpy": "numpy"}  # MONAI's defaults, less monai and torch


class Unsupported(Exception):
    """Something this reader does not evaluate; `python -m monai.bundle run` does."""


def literal(text: str) -> Any:
    """A command-line value as `fire` reads it: a Python literal, bare words as strings; else the text itself."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return text
    for node in ast.walk(tree):  # bare words (false, abc) become strings, as in fire; True/False/None stay
        for field, value in ast.iter_fields(node):
            if isinstance(value, ast.Name):
                setattr(node, field, ast.Constant(value.id))
            elif isinstance(value, list):
                value[:] = [ast.Constant(v.id) if isinstance(v, ast.Name) else v for v in value]
    try:
        return ast.literal_eval(tree.body if not isinstance(tree.body, ast.Name) else ast.Constant(tree.body.id))
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return text


def load_file(path: str | Path) -> Any:
    p = Path(path)
    if p.suffix.lower() == ".json":
        return json.loads(p.read_text())
    import yaml

    return yaml.safe_load(p.read_text())


def split_id(id: str) -> list[str]:
    return [k for k in SEP.split(str(id)) if k != ""]


def locate(target: str) -> Any:
    """`pkg.module.Name` -> the object: the longest importable module prefix, then attributes."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise  # a module that exists but fails to import: its own error
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise Unsupported(f"_target_ {target!r} is not an importable dotted path (MONAI also resolves its own short names)")


class Config:
    """One config (a dict) with overrides applied; `get(id)` resolves an item as MONAI's ConfigParser would."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.globals: dict[str, Any] = {}
        self.resolved: dict[str, Any] = {}
        self._imported = False

    def raw(self, id: str) -> Any:
        node: Any = self.config
        for k in split_id(id):
            node = node[k if isinstance(node, dict) else int(k)]
        return node

    def set(self, id: str, value: Any) -> None:
        """`--a#b value`: the parent must exist (as in MONAI), the last key is set or added."""
        *parents, last = split_id(id)
        try:
            node = self.raw("#".join(parents))
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise Unsupported(f"--{id}: no {'#'.join(parents)!r} in the config to set {last!r} in") from exc
        node[last if isinstance(node, dict) else int(last)] = value
        self.resolved.clear()

    def __contains__(self, id: str) -> bool:
        try:
            self.raw(id)
        except (KeyError, IndexError, ValueError, TypeError):
            return False
        return True

    def get(self, id: str = "") -> Any:
        self._run_imports()
        return self._resolve("#".join(split_id(id)), set())

    def _resolve(self, id: str, waiting: set[str]) -> Any:
        if id in self.resolved:
            return self.resolved[id]
        if id in waiting:
            raise ValueError(f"circular reference to @{id} in the config")
        if id not in self:
            raise KeyError(f"the referring item @{id} is not defined in the config")
        waiting.add(id)
        value = self._value(self.raw(id), id, waiting)
        waiting.discard(id)
        self.resolved[id] = value
        return value

    def _child(self, id: str, key: str | int, waiting: set[str]) -> Any:
        return self._resolve(f"{id}#{key}" if id else str(key), waiting)

    def _value(self, v: Any, id: str, waiting: set[str]) -> Any:
        if isinstance(v, dict) and "_target_" in v:
            return self._instantiate(v, id, waiting)
        if isinstance(v, dict):
            return {k: self._child(id, k, waiting) for k in v}
        if isinstance(v, list):
            return [self._child(id, i, waiting) for i in range(len(v))]
        if isinstance(v, str) and v.startswith("$"):
            return self._eval(v[1:], id, waiting)
        if isinstance(v, str) and v.startswith("@") and REF.fullmatch(v):
            return self._resolve("#".join(split_id(v[1:])), waiting)
        return v

    def _instantiate(self, v: dict[str, Any], id: str, waiting: set[str]) -> Any:
        if str(v.get("_disabled_", False)).strip().lower() == "true":
            return None
        for r in v.get("_requires_") or []:
            self._value(r, id, waiting)
        mode = v.get("_mode_", "default")
        if mode not in ("default", "callable"):
            raise Unsupported(f"{id}: _mode_ {mode!r}")
        target = v["_target_"]
        if not isinstance(target, str) or target.startswith(("$", "@")):
            raise Unsupported(f"{id}: _target_ {target!r} is not a dotted path")
        fn = locate(target)
        kwargs = {k: self._child(id, k, waiting) for k in v if k not in NON_ARGS}
        if mode == "callable":
            return partial(fn, **kwargs) if kwargs else fn
        try:
            return fn(**kwargs)
        except Exception as exc:
            raise RuntimeError(f"failed to instantiate {id} ({target})") from exc

    def _run_imports(self) -> None:
        """Every `$import` / `$from ... import` string, before any other item (as MONAI does)."""
        if self._imported:
            return
        self._imported = True
        stack: list[Any] = [self.config]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, str) and v.startswith("$") and v[1:].lstrip().startswith(("import ", "from ")):
                self._import(v[1:].strip())

    def _import(self, statement: str) -> Any:
        node = ast.parse(statement).body[0]
        if isinstance(node, ast.Import):
            for a in node.names:
                module = importlib.import_module(a.name)
                self.globals[a.asname or a.name.split(".")[0]] = module if a.asname else importlib.import_module(a.name.split(".")[0])
            return module
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = importlib.import_module(node.module)
            for a in node.names:
                if a.name == "*":
                    raise Unsupported("$" + f"{statement}: star import")
                obj = getattr(module, a.name) if hasattr(module, a.name) else importlib.import_module(f"{node.module}.{a.name}")
                self.globals[a.asname or a.name] = obj
            return obj
        raise Unsupported("$" + f"{statement}: not a plain import")

    def _eval(self, expr: str, id: str, waiting: set[str]) -> Any:
        if expr.lstrip().startswith(("import ", "from ")):
            return self._import(expr.strip())
        refs: dict[str, Any] = {}

        def ref(m: re.Match) -> str:
            name = f"__ref{len(refs)}"
            refs[name] = self._resolve("#".join(split_id(m.group(1))), waiting)
            return name

        try:
            tree = ast.parse(REF.sub(ref, expr).strip(), mode="eval")
        except SyntaxError as exc:
            raise Unsupported(f"{id}: ${expr}: {exc.msg}") from exc
        return _Eval(self.globals, refs, f"{id}: ${expr}").visit(tree.body)


class _Eval(ast.NodeVisitor):
    """The whitelist: literals, names, refs, attributes, calls, arithmetic, subscripts; anything else is Unsupported."""

    def __init__(self, names: dict[str, Any], refs: dict[str, Any], where: str):
        self.names, self.refs, self.where = names, refs, where

    def generic_visit(self, node: ast.AST) -> Any:
        raise Unsupported(f"{self.where}: {type(node).__name__} expressions")

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in self.refs:
            return self.refs[node.id]
        if node.id not in self.names and node.id in _LAZY_GLOBALS:
            self.names[node.id] = importlib.import_module(_LAZY_GLOBALS[node.id])
        if node.id not in self.names:
            raise Unsupported(f"{self.where}: name {node.id!r} (not bound by the config's imports)")
        return self.names[node.id]

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_"):
            raise Unsupported(f"{self.where}: private attribute {node.attr!r}")
        return getattr(self.visit(node.value), node.attr)

    def visit_Call(self, node: ast.Call) -> Any:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise Unsupported(f"{self.where}: * or ** arguments")
        return self.visit(node.func)(*[self.visit(a) for a in node.args], **{k.arg: self.visit(k.value) for k in node.keywords})

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        op = _OPS.get(type(node.op))
        if op is None:
            raise Unsupported(f"{self.where}: operator {type(node.op).__name__}")
        return op(self.visit(node.left), self.visit(node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        if not isinstance(node.op, ast.USub):
            raise Unsupported(f"{self.where}: operator {type(node.op).__name__}")
        return -self.visit(node.operand)

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        return self.visit(node.value)[self.visit(node.slice)]

    def visit_List(self, node: ast.List) -> Any:
        return [self.visit(e) for e in node.elts]

    def visit_Tuple(self, node: ast.Tuple) -> Any:
        return tuple(self.visit(e) for e in node.elts)

    def visit_Dict(self, node: ast.Dict) -> Any:
        if any(k is None for k in node.keys):
            raise Unsupported(f"{self.where}: ** in a dict")
        return {self.visit(k): self.visit(v) for k, v in zip(node.keys, node.values)}
