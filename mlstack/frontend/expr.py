"""The on-demand transform language: a small, safe expression language.

Parsed with `ast` into a whitelist of node kinds (numbers, names, `view.field`, arithmetic,
comparisons, boolean and/or/not, and a few functions); never evaluated with `eval`. The
compiler emits vectorised Python from the *parsed tree*, not from the user's text, so no
user text reaches generated code as source.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import cast

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
NODE_WORDS = {  # what a refused node is, in the words of the error message
    "IfExp": "'a if c else b'", "Lambda": "lambda",
    "List": "a list", "Tuple": "a tuple", "Dict": "a mapping", "Set": "a set",
    "Subscript": "indexing with []", "Attribute": "attribute access",
    "ListComp": "a comprehension", "GeneratorExp": "a comprehension", "SetComp": "a comprehension",
    "DictComp": "a comprehension", "JoinedStr": "an f-string", "NamedExpr": "':='",
    "Starred": "'*'", "Await": "await", "Yield": "yield", "YieldFrom": "yield",
    "BinOp": "this operator", "UnaryOp": "this operator", "Compare": "this comparison",
}
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


def _ref(node: ast.AST) -> str | None:
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

    def visit(node: ast.AST) -> None:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise ExprError(f"the expression has more than {MAX_NODES} parts")
        col = getattr(node, "col_offset", 0) + 1
        ref = _ref(node)
        if ref is not None:
            if ref.split(".")[0].startswith("_") or "__" in ref:
                raise ExprError(f"'{ref}': names starting with '_' or holding '__' are not "
                                "allowed", col)
            names.append(ref)
            return
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ExprError("only numbers may be written as constants", col)
            if node.value != node.value or abs(node.value) == float("inf"):
                raise ExprError("numbers must be finite", col)
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
                called = ast.unparse(node.func)
                called = called if len(called) <= 40 else called[:37] + "..."
                raise ExprError(f"'{called}' cannot be called: it is not one of the "
                                "expression's functions", col)
            low, high, _ = FUNCTIONS[node.func.id]
            if node.keywords or not (low <= len(node.args) <= high):
                raise ExprError(f"{node.func.id}() takes {low} argument(s)"
                                if low == high else f"{node.func.id}() takes {low}-{high}", col)
            for arg in node.args:
                visit(arg)
            return
        what = NODE_WORDS.get(type(node).__name__, type(node).__name__)
        advice = "; write where(c, a, b)" if isinstance(node, ast.IfExp) else ""
        raise ExprError(f"{what} is not allowed in a transform expression{advice}", col)

    visit(tree.body)
    return ParsedExpr(tree=tree, names=tuple(dict.fromkeys(names)))


def emit_python(parsed: ParsedExpr, columns: dict[str, str], frame: str = "columns") -> str:
    """Vectorised Python for the expression: each reference becomes frame['column'], where
    `frame` maps each fetched column to a numpy array (a DataFrame works too).

    `columns` maps every reference as written to the (validated) column it reads.
    """

    def emit(node: ast.expr) -> str:
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
            return f"{FUNCTIONS[cast(ast.Name, node.func).id][2]}({args})"
        raise AssertionError(type(node).__name__)  # parse_expr admitted only the kinds above

    return emit(parsed.tree.body)


def canonical(parsed: ParsedExpr) -> str:
    """The expression re-printed from its tree (stable spacing)."""
    return ast.unparse(parsed.tree.body)
