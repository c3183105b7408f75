"""The in-process view runner: each view compiled once into closures, resources streamed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import product
from typing import Any

from carebase.analytics.fhirpath_compile import Compiled, Compiler, Env
from carebase.analytics.runner import ViewRunner
from carebase.analytics.view_errors import ViewEvaluationError
from carebase.analytics.view_model import Column, PathExpression, Select, ViewDefinition

#: a compiled select node: (focus item, inherited %rowIndex, env) -> partial rows (tuples)
_Node = Callable[[Any, int, Env], list[tuple[Any, ...]]]


def _compile_path(path: PathExpression, constants: Mapping[str, object]) -> Compiled:
    return Compiler(constants, path.location).compile(path.expr)


def _column_getter(column: Column, constants: Mapping[str, object]) -> Compiled:
    return _compile_path(column.path, constants)


def _compile_columns(
    columns: tuple[Column, ...], constants: Mapping[str, object]
) -> Callable[[Any, Env], tuple[Any, ...]]:
    getters = [(_column_getter(c, constants), c.collection, c) for c in columns]

    def values(focus: list[Any], env: Env) -> tuple[Any, ...]:
        out: list[Any] = []
        for getter, collection, column in getters:
            got = getter(focus, env)
            if collection:
                out.append(list(got))
            elif not got:
                out.append(None)
            elif len(got) == 1:
                out.append(got[0])
            else:
                resource = env.resource or {}
                raise ViewEvaluationError(
                    column.path.location,
                    f"column {column.name!r} got {len(got)} values for "
                    f"{resource.get('resourceType')}/{resource.get('id')}; set "
                    '"collection": true or narrow the path (e.g. first())',
                )
        return tuple(out)

    return values


def _compile_select(node: Select, constants: Mapping[str, object]) -> _Node:
    columns = _compile_columns(node.columns, constants) if node.columns else None
    children = [_compile_select(child, constants) for child in node.selects]
    branches = [_compile_select(branch, constants) for branch in node.union_all]
    width = len(node.output_columns())
    paths = [_compile_path(p, constants) for p in node.iteration_paths]

    def one_focus(item: Any, row_index: int, env: Env) -> list[tuple[Any, ...]]:
        env.row_index = row_index
        parts: list[list[tuple[Any, ...]]] = [[columns([item], env)]] if columns else []
        for child in children:
            rows = child(item, row_index, env)
            if not rows:
                return []
            parts.append(rows)
        if branches:
            union: list[tuple[Any, ...]] = []
            for branch in branches:
                union.extend(branch(item, row_index, env))
            if not union:
                return []
            parts.append(union)
        if len(parts) == 1:
            return parts[0]
        if all(len(p) == 1 for p in parts):
            return [tuple(v for p in parts for v in p[0])]
        return [tuple(v for part in combo for v in part) for combo in product(*parts)]

    if node.iteration is None:
        return one_focus
    if node.iteration == "repeat":

        def repeat(item: Any, row_index: int, env: Env) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = []
            for index, found in enumerate(_descendants(item, paths, env)):
                rows.extend(one_focus(found, index, env))
            return rows

        return repeat
    path = paths[0]
    or_null = node.iteration == "forEachOrNull"
    own_width = len(node.columns)

    def null_row(env: Env) -> list[tuple[Any, ...]]:
        # forEachOrNull with nothing to iterate: own columns see an empty focus (so %rowIndex
        # is 0 and literals keep their value), nested columns are null
        env.row_index = 0
        own = columns([], env) if columns else ()
        return [own + (None,) * (width - own_width)]

    def for_each(item: Any, row_index: int, env: Env) -> list[tuple[Any, ...]]:
        found = path([item], env)
        if not found:
            return null_row(env) if or_null else []
        rows: list[tuple[Any, ...]] = []
        for index, child in enumerate(found):
            rows.extend(one_focus(child, index, env))
        return rows

    return for_each


def _descendants(item: Any, paths: list[Compiled], env: Env) -> Iterator[Any]:
    """Depth-first, pre-order: every node reached through the repeat paths (not `item`)."""
    stack: list[Iterator[Any]] = [iter(_step(item, paths, env))]
    while stack:
        found = next(stack[-1], _END)
        if found is _END:
            stack.pop()
            continue
        yield found
        stack.append(iter(_step(found, paths, env)))


_END = object()


def _step(item: Any, paths: list[Compiled], env: Env) -> list[Any]:
    out: list[Any] = []
    for path in paths:
        out.extend(path([item], env))
    return out


class CompiledView:
    """A view turned into closures; `rows(resource)` gives that resource's rows."""

    def __init__(self, view: ViewDefinition) -> None:
        self.view = view
        self.column_names = view.column_names
        constants = {c.name: c.value for c in view.constants}
        self._where = [(p, _compile_path(p, constants)) for p in view.where]
        self._root = _compile_select(Select("ViewDefinition", selects=view.select), constants)

    def rows(self, resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Rows of one resource (none when it is of another type or fails `where`)."""
        if resource.get("resourceType") != self.view.resource:
            return
        env = Env(resource, 0)
        focus = [resource]
        for path, test in self._where:
            result = test(focus, env)
            if not result:
                return
            if len(result) != 1 or not isinstance(result[0], bool):
                raise ViewEvaluationError(
                    path.location,
                    f"where must give a boolean, got {result!r} for "
                    f"{resource.get('resourceType')}/{resource.get('id')}",
                )
            if not result[0]:
                return
        names = self.column_names
        for values in self._root(resource, 0, env):
            yield dict(zip(names, values, strict=True))


def compile_view(view: ViewDefinition | Mapping[str, object]) -> CompiledView:
    """`view` (parsed or JSON) compiled for repeated use."""
    return CompiledView(ViewRunner.parse(view))


class PythonRunner(ViewRunner):
    """Evaluates views in this process, one resource at a time."""

    name = "python"

    def run(
        self, view: ViewDefinition | Mapping[str, object], resources: Iterable[dict[str, object]]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over `resources`; the view is compiled before the first resource."""
        compiled = compile_view(view)
        return self._stream(compiled, resources)

    @staticmethod
    def _stream(
        compiled: CompiledView, resources: Iterable[dict[str, object]]
    ) -> Iterator[dict[str, object]]:
        for resource in resources:
            yield from compiled.rows(resource)
