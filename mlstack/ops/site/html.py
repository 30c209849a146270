"""A small HTML builder that escapes by construction: text is escaped unless it is `Markup`
(HTML this package built itself), and so is every attribute value. The report's pages are
built from it, so no user string (a name, a description, an error from the deploy state) can
become markup."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape


class Markup(str):
    """HTML that needs no escaping: built here, or an SVG rendered from escaped labels."""

    __slots__ = ()


def text(value: object) -> Markup:
    """Any value as escaped text (None as an empty string)."""
    if isinstance(value, Markup):
        return value
    return Markup(escape("" if value is None else str(value), quote=True))


def join(children: Iterable) -> Markup:
    out = []
    for child in children:
        if child is None:
            continue
        if isinstance(child, (str, int, float)):
            out.append(text(child))
        else:
            out.append(join(child))
    return Markup("".join(out))


VOID = frozenset({"meta", "link", "br", "hr", "img", "col"})


def h(tag: str, *children, **attrs) -> Markup:
    """<tag attrs>children</tag>. Attribute names: `class_` -> class, `data_x` -> data-x;
    a value of None or False leaves the attribute out, True writes it bare."""
    rendered = []
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        rendered.append(f" {name}" if value is True else f' {name}="{text(value)}"')
    opening = f"<{tag}{''.join(rendered)}>"
    if tag in VOID:
        return Markup(opening)
    return Markup(f"{opening}{join(children)}</{tag}>")


def table(headers: Iterable, rows: Iterable[Iterable], *, class_: str | None = None,
          empty: str = "none") -> Markup:
    """A table; a row's cell may be Markup (a verdict badge, a link). No rows: `empty`."""
    rows = [list(r) for r in rows]
    if not rows:
        return h("p", empty, class_="empty")
    return h("table", h("thead", h("tr", [h("th", c) for c in headers])),
             h("tbody", [h("tr", [h("td", c) for c in row]) for row in rows]), class_=class_)


def definitions(pairs: Iterable[tuple[str, object]]) -> Markup:
    """A definition list of (term, value), values that are None left out."""
    return h("dl", [(h("dt", k), h("dd", v)) for k, v in pairs if v is not None])


def verdict(ok: bool | None, note: str = "") -> Markup:
    """A met / MISSED / not judged badge."""
    if ok is None:
        return h("span", note or "not judged", class_="badge unknown")
    return h("span", "met" if ok else "MISSED", class_="badge ok" if ok else "badge bad")
