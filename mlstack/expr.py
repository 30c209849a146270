"""The on-demand transform language: a small, safe expression language.

Parsed with `ast` into a whitelist of node kinds (numbers, names, `view.field`, arithmetic,
comparisons, boolean and/or/not, and a few functions); never evaluated with `eval`. The
compiler emits vectorised Python from the *parsed tree*, not from the user's text, so no
user text reaches generated code as source.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

FUNCTIONS = {  # name -> (min args, max args, numpy spelling)
    "abs": (1, 1, "np.abs"),
    "sqrt": (1, 1, "np.sqrt"),
    "log": (1, 1, "np.log"),
    "log1p": (1, 1, "np.log1p"),
    "exp": (1, 1, "np.exp"),
    "floor": (1, 1, "np.floor"),
    "ceil": (1, 1, "np.ceil"),
    "min": (2, 2, "np.minimum"),
    "max": (2, 2, "np.maximum"),
    "clip": (3, 3, "np.clip"),
    "where": (3, 3, "np.where"),
}
BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
          ast.Mod: "%", ast.Pow: "**"}
CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
MAX_EXPR_LENGTH = 500
MAX_NODES = 200


class ExprError(ValueError):
    def __init__(self, message: str, column: int = 1):
        super().__init__(message)
        self.message = message
        self.column = column  # 1-based column inside the expression text


@dataclass(frozen=True)
class ParsedExpr:
    tree: ast.Expression
    names: tuple[str, ...]  # every input reference, as written ('field' or 'view.field')


def _ref(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


def parse_expr(text: str) -> ParsedExpr:
    if not isinstance(text, str) or not text.strip():
        raise ExprError("the expression is empty")
    if len(text) > MAX_EXPR_LENGTH:
        raise ExprError(f"the expression is longer than {MAX_EXPR_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error: {exc.msg}", exc.offset or 1) from None
    names: list[str] = []
    count = 0

    def visit(node):
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise ExprError(f"the expression has more than {MAX_NODES} parts")
        col = getattr(node, "col_offset", 0) + 1
        ref = _ref(node)
        if ref is not None:
            if ref.split(".")[0].startswith("_") or ref.endswith("__"):
                raise ExprError(f"'{ref}' is not allowed", col)
            names.append(ref)
            return
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ExprError("only numbers may be written as constants", col)
            return
        if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
            visit(node.left)
            visit(node.right)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            visit(node.operand)
            return
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                visit(value)
            return
        if isinstance(node, ast.Compare) and all(type(op) in CMPOPS for op in node.ops):
            if len(node.ops) != 1:
                raise ExprError("write chained comparisons with 'and'", col)
            visit(node.left)
            visit(node.comparators[0])
            return
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                fname = node.func.id if isinstance(node.func, ast.Name) else "this call"
                allowed = ", ".join(sorted(FUNCTIONS))
                raise ExprError(f"function '{fname}' is not allowed (allowed: {allowed})", col)
            low, high, _ = FUNCTIONS[node.func.id]
            if node.keywords or not (low <= len(node.args) <= high):
                raise ExprError(f"{node.func.id}() takes {low} argument(s)"
                                if low == high else f"{node.func.id}() takes {low}-{high}", col)
            for arg in node.args:
                visit(arg)
            return
        raise ExprError(f"'{type(node).__name__}' is not allowed in a transform expression", col)

    visit(tree.body)
    return ParsedExpr(tree=tree, names=tuple(dict.fromkeys(names)))


def emit_python(parsed: ParsedExpr, columns: dict[str, str], frame: str = "df") -> str:
    """Vectorised Python for the expression: each reference becomes frame['column'].

    `columns` maps every reference as written to the (validated) column it reads.
    """

    def emit(node) -> str:
        ref = _ref(node)
        if ref is not None:
            return f"{frame}[{columns[ref]!r}]"
        if isinstance(node, ast.Constant):
            return repr(float(node.value)) if isinstance(node.value, float) else repr(node.value)
        if isinstance(node, ast.BinOp):
            return f"({emit(node.left)} {BINOPS[type(node.op)]} {emit(node.right)})"
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return f"(~({emit(node.operand)}).astype(bool))"
            return f"({'-' if isinstance(node.op, ast.USub) else '+'}{emit(node.operand)})"
        if isinstance(node, ast.BoolOp):
            joiner = " & " if isinstance(node.op, ast.And) else " | "
            return "(" + joiner.join(f"({emit(v)}).astype(bool)" for v in node.values) + ")"
        if isinstance(node, ast.Compare):
            op = CMPOPS[type(node.ops[0])]
            return f"({emit(node.left)} {op} {emit(node.comparators[0])})"
        if isinstance(node, ast.Call):
            args = ", ".join(emit(a) for a in node.args)
            return f"{FUNCTIONS[node.func.id][2]}({args})"
        raise AssertionError(type(node).__name__)  # parse_expr admitted only the kinds above

    return emit(parsed.tree.body)


def canonical(parsed: ParsedExpr) -> str:
    """The expression re-printed from its tree (stable spacing)."""
    return ast.unparse(parsed.tree.body)
