"""A small expression language for `filter` conditions: data, not code (nothing is passed to eval).

Grammar, loosest binding first::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum)?
    sum     := atom (("+" | "-") atom)*
    atom    := NUMBER | STRING | true | false | null | COLUMN | FUNC "(" expr ")" | "(" expr ")"
             | "[" expr ("," expr)* "]"

Columns are bare names (`output`, `num_turns`); functions are `len`, `lower`, `upper`, `strip`.
Examples: `len(output) > 0 and not (input in ["", null])`, `"sorry" not in lower(output)`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from hydratune.errors import UserError

FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "len": lambda v: len(v) if v is not None else 0,
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "strip": lambda v: str(v).strip(),
}
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}
CONSTANTS = {"true": True, "false": False, "null": None, "none": None}

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<string>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>==|!=|<=|>=|[<>()\[\],+-]))"
)


def _tokens(text: str, where: str) -> list[tuple[str, Any]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise UserError(f"{where}: cannot read {text[pos:].strip()!r} in condition {text!r}")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "number":
            value = float(value) if "." in value else int(value)
        elif kind == "string":
            value = value[1:-1].encode().decode("unicode_escape")
        out.append((kind, value))
    return out


class Expr:
    """A parsed condition. `Expr(text)(row)` evaluates it; `names` are the columns it reads."""

    def __init__(self, text: str, where: str = "condition"):
        self.text = text
        self.where = where
        self.names: set[str] = set()
        self._tokens = _tokens(str(text), where)
        self._pos = 0
        if not self._tokens:
            raise UserError(f"{where}: the condition is empty; write e.g. 'len(output) > 0'")
        self._eval = self._or()
        if self._pos != len(self._tokens):
            self._fail(f"unexpected {self._tokens[self._pos][1]!r}")

    def __call__(self, row: dict) -> Any:
        return self._eval(row)

    # Parsing: each method returns a closure over the row.
    def _fail(self, what: str):
        raise UserError(
            f"{self.where}: {what} in condition {self.text!r} (see hydratune.data.expr for the syntax)"
        )

    def _peek(self, *values: str) -> bool:
        return self._pos < len(self._tokens) and self._tokens[self._pos][1] in values

    def _take(self, value: str) -> None:
        if not self._peek(value):
            self._fail(f"expected {value!r}")
        self._pos += 1

    def _or(self):
        left = self._and()
        while self._peek("or"):
            self._pos += 1
            left = (lambda a, b: lambda r: a(r) or b(r))(left, self._and())
        return left

    def _and(self):
        left = self._not()
        while self._peek("and"):
            self._pos += 1
            left = (lambda a, b: lambda r: a(r) and b(r))(left, self._not())
        return left

    def _not(self):
        if self._peek("not"):
            self._pos += 1
            inner = self._not()
            return lambda r: not inner(r)
        return self._compare()

    def _compare(self):
        left = self._sum()
        op = None
        if self._peek(*COMPARISONS):
            op = self._tokens[self._pos][1]
            self._pos += 1
        elif (
            self._peek("not") and self._pos + 1 < len(self._tokens) and self._tokens[self._pos + 1][1] == "in"
        ):
            op = "not in"
            self._pos += 2
        if op is None:
            return left
        right, fn = self._sum(), COMPARISONS[op]
        return lambda r: fn(left(r), right(r))

    def _sum(self):
        left = self._atom()
        while self._peek("+", "-"):
            fn = operator.add if self._tokens[self._pos][1] == "+" else operator.sub
            self._pos += 1
            left = (lambda a, b, f: lambda r: f(a(r), b(r)))(left, self._atom(), fn)
        return left

    def _atom(self):
        if self._pos >= len(self._tokens):
            self._fail("unexpected end")
        kind, value = self._tokens[self._pos]
        self._pos += 1
        if kind in ("number", "string"):
            return lambda r: value
        if kind == "op" and value == "(":
            inner = self._or()
            self._take(")")
            return inner
        if kind == "op" and value == "[":
            items = [self._or()]
            while self._peek(","):
                self._pos += 1
                items.append(self._or())
            self._take("]")
            return lambda r: [item(r) for item in items]
        if kind == "name":
            if value.lower() in CONSTANTS:
                constant = CONSTANTS[value.lower()]
                return lambda r: constant
            if self._peek("("):
                if value not in FUNCTIONS:
                    self._fail(f"unknown function {value!r} (known: {', '.join(FUNCTIONS)})")
                self._take("(")
                arg, fn = self._or(), FUNCTIONS[value]
                self._take(")")
                return lambda r: fn(arg(r))
            self.names.add(value)
            return lambda r: r[value]
        self._fail(f"unexpected {value!r}")


def check_columns(names: set[str], columns: list[str], where: str) -> None:
    """UserError naming the first missing column and the available ones."""
    missing = sorted(set(names) - set(columns))
    if missing:
        raise UserError(
            f"{where}: column {missing[0]!r} is not in the data; available columns: {', '.join(columns)}"
        )


class Template:
    """A string template over a row's columns: `str.format` style (`"{instruction}\\n{input}"`), or a
    sandboxed Jinja template when it contains `{{` or `{%` (for conditionals: `{% if input %}...`).

    Format-style fields must be plain column names: attribute and index lookups (`{a.b}`, `{a[0]}`)
    are refused, so a template can only read values, never reach into Python objects.
    """

    def __init__(self, text: str, where: str = "template"):
        import string

        self.text = str(text)
        self.where = where
        if "{{" in self.text or "{%" in self.text:
            from jinja2 import StrictUndefined, meta
            from jinja2.sandbox import SandboxedEnvironment

            env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
            try:
                self.names = set(meta.find_undeclared_variables(env.parse(self.text)))
                self._jinja = env.from_string(self.text)
            except Exception as err:  # jinja2.TemplateSyntaxError and friends
                raise UserError(f"{where}: bad Jinja template {self.text!r}: {err}") from err
            return
        self._jinja = None
        self.names = set()
        try:
            for _, field, _, _ in string.Formatter().parse(self.text):
                if field is None:
                    continue
                if not field.isidentifier():
                    raise UserError(
                        f"{where}: template field {{{field}}} must be a plain column name "
                        "(no attributes, indices or positional fields)"
                    )
                self.names.add(field)
        except ValueError as err:
            raise UserError(
                f"{where}: bad template {self.text!r}: {err} (write a literal brace as {{{{)"
            ) from err

    def __call__(self, row: dict) -> str:
        if self._jinja is not None:
            return self._jinja.render(**row)
        return self.text.format_map({k: "" if row[k] is None else row[k] for k in self.names})
