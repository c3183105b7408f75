"""Compiles a whole ViewDefinition to one SQL query (any Dialect) over a `resource` column.

Each select node becomes a SQL list of rows (a row is a list of items), built with list
functions: sibling selects multiply (cross product), unionAll concatenates, forEach maps over
the iterated items with their 0-based position as %rowIndex. The query explodes the list of
rows of each resource, so one query yields every row and engines run it in parallel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from carebase.analytics.runner import ViewRunner
from carebase.analytics.sql_compile import ElementScope, Scope, SqlCompiler, is_boolean
from carebase.analytics.sql_dialect import Dialect
from carebase.analytics.sql_operators import union_items
from carebase.analytics.sql_scalar import FROM_RESOURCE, Step, context_of, member_steps, single
from carebase.analytics.view_errors import ViewEvaluationError
from carebase.analytics.view_model import ColumnInfo, PathExpression, Select, ViewDefinition
from carebase.errors import BadRequest
from carebase.fhir.element_nav import Context, root_context

#: the column of the source relation that holds each resource as an item
RESOURCE = "resource"

# an error() raised by the compiled query: "<location>: <problem>"
_VIEW_ERROR = re.compile(r"(ViewDefinition[^\s:]*): (.*)", re.S)
_SPARK_MALFORMED = "MALFORMED_RECORD_IN_PARSING"
_SQL_STATE = re.compile(r"\s*SQLSTATE: \w+$")


def translate_error(exc: Exception, where: str) -> Exception:
    """An engine error as a carebase error: the query's own error() calls become
    ViewEvaluationError; unreadable JSON becomes BadRequest naming `where`."""
    text = str(exc)
    found = _VIEW_ERROR.search(text)
    if found:
        problem = found.group(2).strip().splitlines()[0]
        # Spark appends the SQL state of raise_error() to the message
        return ViewEvaluationError(found.group(1), _SQL_STATE.sub("", problem))
    if "JSON" in text and ("malformed" in text.lower() or "parse" in text.lower()):
        return BadRequest(f"{where}: not valid NDJSON ({text.splitlines()[0]})", location=where)
    if _SPARK_MALFORMED in text:  # Spark's parse_json; the first line is py4j's
        line = next(line for line in text.splitlines() if _SPARK_MALFORMED in line)
        detail = line.split("] ", 1)[-1]
        return BadRequest(f"{where}: not valid NDJSON ({detail})", location=where)
    return exc


@dataclass(frozen=True, slots=True)
class ViewQuery:
    """The compiled query: `sql` reads `{source}`, a relation with column `resource` (when
    `needs_resource`) and one column per pre-extracted field, named as in `fields`."""

    sql: str
    columns: tuple[ColumnInfo, ...]
    #: (JSON keys from the resource, column name) of each field the query reads
    fields: tuple[tuple[tuple[str, ...], str], ...] = ()
    #: whether the query reads `resource` itself besides its fields
    needs_resource: bool = True
    #: `fields` extracted from `{source}` (a relation with column `resource`)
    fields_sql: str = "{source}"
    #: (member chain from the resource, column name) of each list column the query reads
    lists: tuple[tuple[tuple[Step, ...], str], ...] = ()
    #: (chain to the elements, column name, (chain from an element, record member name)...)
    #: of each column of forEach element records (`ElementGroup`)
    groups: tuple[tuple[tuple[Step, ...], str, tuple[tuple[tuple[Step, ...], str], ...]], ...] = ()

    #: `sql` giving each column as the typed value written files hold (`Dialect.typed`),
    #: converted once per resource where a column's value is the same in all its rows
    typed_sql: str = ""

    def over(self, source: str, *, typed: bool = False) -> str:
        """The query over a relation (name or parenthesised subquery) with column `resource`."""
        return self.over_fields(self.fields_sql.replace("{source}", source), typed=typed)

    def over_fields(self, relation: str, *, typed: bool = False) -> str:
        """The query over a relation that already has the field columns."""
        return (self.typed_sql if typed else self.sql).replace("{source}", relation)


class _ViewCompiler:
    def __init__(self, view: ViewDefinition, dialect: Dialect) -> None:
        self.view = view
        self.d = dialect
        self.c = SqlCompiler(dialect, view.constants, view.resource)
        self.root = root_context(view.resource)

    def expr(self, path: PathExpression, scope: Scope) -> str:
        self.c.location = path.location
        return self.c.compile(path.expr, scope)

    def columns_row(self, node: Select, scope: Scope) -> list[str]:
        d, out = self.d, []
        for column in node.columns:
            if not column.collection:
                self.c.location = column.path.location
                item = single(self.c, column.path.expr, scope)
                if item is not None:  # at most one value by the definitions: no list
                    out.append(item)
                    continue
            lst = self.expr(column.path, scope)
            if column.collection:
                out.append(d.collection_item(lst))
                continue
            v = self.c.var()
            many = self.c.fail(
                f"column {column.name!r} got several values; set "
                '"collection": true or narrow the path (e.g. first())'
            )
            value = d.let(
                lst,
                v,
                f"CASE WHEN {d.length(v)} = 0 THEN {d.null_item} WHEN {d.length(v)} = 1 "
                f"THEN {d.at(v, '0')} ELSE {many} END",
            )
            items = union_items(self.c, column.path.expr, scope)
            if items is not None:  # a union of single items: mostly one or none is there
                present = " + ".join(f"CAST({i} IS NOT NULL AS INT)" for i in items)
                first = f"coalesce({', '.join(items)})"
                value = f"CASE WHEN {present} <= 1 THEN {first} ELSE {value} END"
            out.append(value)
        return out

    def product(self, parts: list[str]) -> str:
        d, out = self.d, parts[0]
        for part in parts[1:]:
            a, b = self.c.var(), self.c.var()
            out = d.flatten(d.transform(out, a, d.transform(part, b, d.concat(a, b))))
        return out

    def one_focus(self, node: Select, scope: Scope) -> str:
        """The rows of `node` over one focus item (`scope.focus`, a one-item list)."""
        d = self.d
        parts = [d.list_of(d.list_of(*self.columns_row(node, scope)))] if node.columns else []
        parts += [self.node(child, scope) for child in node.selects]
        if node.union_all:
            parts.append(d.concat(*(self.node(b, scope) for b in node.union_all)))
        return self.product(parts) if parts else d.list_of(d.empty)

    def node(self, node: Select, scope: Scope) -> str:
        """The rows of `node` (iterating, if it does) from the focus item of `scope`."""
        d, c = self.d, self.c
        if node.iteration is None:
            return self.one_focus(node, scope)
        grouped = self.grouped(node, scope)
        if grouped is not None:
            return grouped
        inner: Context | None = None  # repeat mixes items of several types
        if node.iteration == "repeat":
            item = d.single_name(scope.focus)
            assert item is not None  # a select's focus is one named item
            found = self.descendants(node.iteration_paths, item, scope, d.repeat_depth)
        else:
            found = self.expr(node.iteration_paths[0], scope)
            inner = context_of(c, node.iteration_paths[0].expr, scope)
        it, i, lst = c.var(), c.var(), c.var()
        items = lst if node.iteration == "forEachOrNull" else found
        focus = self.one_focus(node, Scope(d.list_of(it), d.index0(i), scope.resource, inner))
        rows = d.flatten(d.transform_indexed(items, it, i, focus))
        if node.iteration != "forEachOrNull":
            return rows
        return d.let(
            found,
            lst,
            f"CASE WHEN {d.length(lst)} = 0 THEN {self.null_rows(node, scope)} ELSE {rows} END",
        )

    def null_rows(self, node: Select, scope: Scope) -> str:
        """forEachOrNull with nothing to iterate: one row, the node's own columns over an
        empty focus, its nested columns null."""
        d = self.d
        own = self.columns_row(node, Scope(d.empty, "0", scope.resource))
        nulls = [d.null_item] * (len(node.output_columns()) - len(node.columns))
        return d.list_of(d.list_of(*own, *nulls))

    def grouped(self, node: Select, scope: Scope) -> str | None:
        """The rows of a forEach over elements at a member chain from the resource, when its
        columns read the elements only through member chains: each element is then a record
        of those chains' items (`ElementGroup`), extracted with the resource's fields, and no
        element's JSON is parsed per column. None when the forEach needs the elements
        themselves (`$this` as an item, a function over it): compiled the generic way."""
        d, c = self.d, self.c
        if node.iteration not in ("forEach", "forEachOrNull") or scope.element is not None:
            return None
        path = node.iteration_paths[0]
        c.location = path.location
        found = member_steps(c, path.expr, scope)
        if found is None or found[0] != FROM_RESOURCE or not found[1]:
            return None
        before = c.state()
        group = c.group(found[1])
        it, i = c.var(), c.var()
        unbound = c.var()  # `$this` as an item: the record cannot stand for it
        inner = context_of(c, path.expr, scope)
        element = ElementScope(group, it)
        focus = self.one_focus(
            node, Scope(d.list_of(unbound), d.index0(i), scope.resource, inner, element)
        )
        if re.search(rf"\b{unbound}\b", focus):
            c.restore(before)
            return None
        rows = d.flatten(d.transform_indexed(group.column, it, i, focus))
        if node.iteration == "forEach":
            return rows
        null_rows = self.null_rows(node, scope)
        return f"CASE WHEN {d.length(group.column)} = 0 THEN {null_rows} ELSE {rows} END"

    def descendants(
        self, paths: tuple[PathExpression, ...], item: str, scope: Scope, depth: int
    ) -> str:
        """Depth-first, pre-order items reached through `paths` from `item` (not `item`)."""
        d, c = self.d, self.c
        step = d.concat(
            *(self.expr(p, scope.with_focus(d.list_of(item), scope.context)) for p in paths)
        )
        if depth == 0:
            c.location = paths[0].location
            too_deep = c.fail(f"repeat goes deeper than {d.repeat_depth} levels in {d.name}")
            return f"CASE WHEN {d.length(step)} > 0 THEN {too_deep} ELSE {d.empty} END"
        z = c.var()
        # deeper items are of whatever type the paths reached: no known context
        below = self.descendants(paths, z, scope.with_focus(scope.focus), depth - 1)
        return d.flatten(d.transform(step, z, d.concat(d.list_of(z), below)))

    def where(self) -> str:
        d, c = self.d, self.c
        scope = Scope(d.list_of(RESOURCE), "0", RESOURCE, self.root)
        tests = []
        for path in self.view.where:
            c.location = path.location
            if is_boolean(path.expr):
                tests.append(f"coalesce({c.compile_bool(path.expr, scope)}, false)")
                continue
            v = c.var()
            first = d.at(v, "0")
            tests.append(
                d.let(
                    c.compile(path.expr, scope),
                    v,
                    f"CASE WHEN {d.length(v)} = 0 THEN false "
                    f"WHEN {d.length(v)} = 1 AND {d.kind(first)} = 'boolean' "
                    f"THEN {d.as_bool(first)} "
                    f"ELSE {c.fail('where must give one boolean')} END",
                )
            )
        return " AND ".join(tests) or "true"

    def flat_columns(self, node: Select, scope: Scope) -> list[str]:
        """Column items of a tree without iteration or unionAll (exactly one row)."""
        out = self.columns_row(node, scope)
        for child in node.selects:
            out += self.flat_columns(child, scope)
        return out

    def query(self) -> ViewQuery:
        d = self.d
        root = Select("ViewDefinition", selects=self.view.select)
        resource_type = d.as_string(self.c.field(("resourceType",)))
        columns = self.view.columns
        names = [d.ident(col.name) for col in columns]
        keep = f"WHERE {resource_type} = {d.lit(self.view.resource)} AND {self.where()}"
        if _one_row(root):
            # one row per resource: plain column expressions, no list of rows to explode
            scope = Scope(d.list_of(RESOURCE), "0", RESOURCE, self.root)
            items = self.flat_columns(root, scope)
            plain, typed = [], []
            for item, name, column in zip(items, names, columns, strict=True):
                plain.append(f"{d.output(item)} AS {name}")
                typed.append(f"{d.typed(d.output(item), column)} AS {name}")
            select = f"FROM {{source}} AS s {keep}"
            return self.finish(
                f"SELECT {', '.join(plain)} {select}", f"SELECT {', '.join(typed)} {select}"
            )
        return self.finish(*self.rows_query(root, names, keep))

    def rows_query(self, root: Select, names: list[str], keep: str) -> tuple[str, str]:
        """The query of a view giving any number of rows per resource: top-level selects of
        one row per resource are plain columns beside the exploded rows of the others (the
        engine repeats them per row), not items of every row's list."""
        d = self.d
        scope = Scope(d.list_of(RESOURCE), "0", RESOURCE, self.root)
        columns = self.view.columns
        plain: list[str] = []  # per output column: its plain column, or "" (in the rows)
        computed: list[str] = []
        parts: list[str] = []
        for child in root.selects:
            if _one_row(child):
                for item in self.flat_columns(child, scope):
                    n = len(computed)
                    plain.append(f"_c{n}")
                    # its typed value too, once per resource (unused ones the engine drops)
                    typed = d.typed(d.output(item), columns[len(plain) - 1])
                    computed.append(f"{item} AS _c{n}, {typed} AS _t{n}")
            else:
                parts.append(self.node(child, scope))
                plain += [""] * len(child.output_columns())
        picks, typed_picks, n = [], [], 0
        for name, column, info in zip(names, plain, columns, strict=True):
            if column:
                picks.append(f"{d.output(column)} AS {name}")
                typed_picks.append(f"_t{column[2:]} AS {name}")
            else:
                value = d.output(d.at("r", str(n)))
                picks.append(f"{value} AS {name}")
                typed_picks.append(f"{d.typed(value, info)} AS {name}")
                n += 1
        # plain columns are computed before the rows are exploded: the engine would compute
        # a select item beside a set-returning one once per row it gives
        beside = "".join(f"{item}, " for item in computed)
        inner = (
            f"FROM (SELECT {beside}{self.product(parts)} AS _rows FROM {{source}} AS s {keep}) "
            "AS u) AS t"
        )

        def rows(prefix: str) -> str:  # the plain columns of one form carried through
            carried = "".join(f"{prefix}{c[2:]}, " for c in plain if c)
            return f"FROM (SELECT {carried}{d.explode('_rows')} AS r {inner}"

        return (
            f"SELECT {', '.join(picks)} {rows('_c')}",
            f"SELECT {', '.join(typed_picks)} {rows('_t')}",
        )

    def finish(self, sql: str, typed_sql: str) -> ViewQuery:
        c, d = self.c, self.d
        fields = dict(c.fields)  # the typed reader's: read before the generic ones add theirs
        # the generic spelling of each list and record column, from `resource`: each chain
        # starts at the value its keys up to the first repeating one reach (a field, read in
        # the one parse of the resource), then goes member by member
        generic = _ExactChains(c)
        computed = {name: generic.items(steps) for steps, name in c.lists.items()}
        for steps, group in c.groups.items():
            e = c.var()
            members = {m: c.chain(d.list_of(e), rel) for rel, m in group.members.items()}
            computed[group.column] = d.transform(generic.items(steps), e, d.struct_of(members))
        return ViewQuery(
            sql,
            self.view.columns,
            tuple(fields.items()),
            # a mention inside a string literal only costs the faster source, never a row
            re.search(rf"\b{RESOURCE}\b", sql) is not None,
            d.with_fields("{source}", generic.fields, computed),
            tuple(c.lists.items()),
            tuple((steps, g.column, tuple(g.members.items())) for steps, g in c.groups.items()),
            typed_sql,
        )


class _ExactChains:
    """Member chains from `resource` for the exact source: each starts from a field (keys
    up to and including the first repeating step), registered in `fields`, a copy of the
    compiler's own so the typed reader's columns stay as the query reads them."""

    def __init__(self, c: SqlCompiler) -> None:
        self.c = c
        self.fields = dict(c.fields)

    def items(self, steps: tuple[Step, ...]) -> str:
        c = self.c
        head = next((n for n, step in enumerate(steps) if step.many), len(steps) - 1) + 1
        keys = tuple(step.key for step in steps[:head])
        name = self.fields.setdefault(keys, f"_x{len(self.fields)}")
        many = steps[head - 1].many
        start = c.d.items(name) if many else c.d.list_of(name)
        return c.chain(f"CASE WHEN {name} IS NULL THEN {c.d.empty} ELSE {start} END", steps[head:])


def _one_row(node: Select) -> bool:
    """Whether a select tree gives exactly one row per resource (no iteration, no unionAll)."""
    if node.iteration is not None or node.union_all:
        return False
    return all(_one_row(child) for child in node.selects)


def compile_view_query(view: ViewDefinition, dialect: Dialect) -> ViewQuery:
    """One SQL query giving the rows of `view`; column values are JSON text (or NULL)."""
    return _ViewCompiler(view, dialect).query()


class SqlViewRunner(ViewRunner):
    """An engine that runs each view as one query of its SQL `dialect` (DuckDB, Spark)."""

    dialect: Dialect

    def compile(self, view: ViewDefinition | Mapping[str, object]) -> ViewQuery:
        """The query of `view` (for inspection and reuse)."""
        return compile_view_query(self.parse(view), self.dialect)
