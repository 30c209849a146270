"""Safe YAML loading with a source map (JSON path -> line:column).

Only the safe loader is used. Before anything is built, the byte and event streams are
checked: size, encoding, BOM, tabs in indentation, anchors/aliases (refused, so no
"billion laughs"), nesting depth, multiple documents and duplicate keys. Every problem
becomes a Diagnostic with the file:line:column it was found at; nothing here raises for a
user mistake except `LoadFailed`, which carries those diagnostics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

import yaml

from mlstack.diagnostics.diagnostic import Diagnostic, Location, Severity

MAX_BYTES = 1_000_000
MAX_DEPTH = 32

Path_ = tuple[str | int, ...]  # a path into the document: keys (str) and list indices (int)


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of the document was written."""

    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def locate(self, path: Path_, *, key: bool = False) -> Location:
        """The closest known location of `path` (its key if asked and known, else its value)."""
        path = tuple(path)
        while True:
            if key and path in self.keys:
                line, col = self.keys[path]
                return Location(self.file, line, col)
            if path in self.values:
                line, col = self.values[path]
                return Location(self.file, line, col)
            if not path:
                return Location(self.file, 1, 1)
            path = path[:-1]
            key = True

    def has(self, path: Path_) -> bool:
        return tuple(path) in self.values

    def locate_inside(self, path: Path_, offset: int) -> Location:
        """The character `offset` (0-based) inside the scalar at `path`, when the scalar is
        written on one line (plain or quoted); otherwise the scalar's start."""
        start = self.locate(path)
        if tuple(path) not in self.values or not 0 < start.line <= len(self.lines):
            return start
        line = self.lines[start.line - 1]
        column = start.column - 1
        opener = line[column:column + 1]
        if opener in ("|", ">"):
            return start
        if opener in ("'", '"'):
            column += 1
        return Location(self.file, start.line, min(column + offset, len(line)) + 1)


@dataclass
class LoadedDocument:
    data: dict[str, Any]
    source_map: SourceMap
    text: str


class LoadFailed(Exception):
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(diagnostics[0].message if diagnostics else "load failed")
        self.diagnostics = diagnostics


def _fail(code: str, message: str, file: str, line: int = 1, col: int = 1,
          hint: str | None = None) -> NoReturn:
    raise LoadFailed([Diagnostic(code, Severity.ERROR, message, Location(file, line, col), hint)])


def _position_of_byte(data: bytes, offset: int) -> tuple[int, int]:
    """Line and column (in characters, as YAML counts them) of a byte offset."""
    before = data[:offset]
    line = before.count(b"\n") + 1
    line_start = before.rfind(b"\n") + 1
    col = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, col


def decode_spec_bytes(data: bytes, file: str) -> str:
    if len(data) > MAX_BYTES:
        _fail("MLS009", f"spec is {len(data)} bytes; the limit is {MAX_BYTES}", file,
              hint="split data out of the spec; it should describe the system, not hold data")
    if data.startswith(b"\xef\xbb\xbf"):
        _fail("MLS003", "file starts with a UTF-8 byte-order mark (BOM)", file,
              hint="save the file as UTF-8 without BOM")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        _fail("MLS002", "file is UTF-16, not UTF-8", file, hint="save the file as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position_of_byte(data, exc.start)
        _fail("MLS002", f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x})", file, line,
              col, hint="save the file as UTF-8")
    if "\x00" in text:
        line, col = _position_of_byte(data, data.index(b"\x00"))
        _fail("MLS002", "file contains a NUL byte", file, line, col,
              hint="remove it; a spec is plain text")
    return text


def _check_indentation(text: str, file: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip(" ")
        if stripped.startswith("\t"):
            _fail("MLS004", "tab character in indentation", file, number,
                  len(line) - len(stripped) + 1, hint="YAML indents with spaces only")


def _check_events(text: str, file: str) -> list[yaml.Event]:
    """Walk the event stream once (iteratively): refuse aliases, anchors, deep nesting, >1 doc.
    Returns the events, so the document is composed from them without parsing it again."""
    depth = 0
    documents = 0
    events: list[yaml.Event] = []
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            events.append(event)
            mark = cast(yaml.Mark, event.start_mark)  # set on every parsed event
            tag = getattr(event, "tag", None)
            if tag is not None:
                tag = tag.replace("tag:yaml.org,2002:", "!!")
                _fail("MLS008", f"YAML tags ({tag}) are not allowed in a spec", file,
                      mark.line + 1, mark.column + 1,
                      hint="remove the tag; the spec decides what each value means")
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                _fail("MLS008", "YAML anchors and aliases are not allowed in a spec",
                      file, mark.line + 1, mark.column + 1,
                      hint="write the value out; aliases can expand without bound")
            if isinstance(event, yaml.ScalarEvent) and (
                    surrogate := SURROGATE_RE.search(event.value)):
                _fail("MLS011", "YAML syntax error: an escape writes a lone surrogate "
                      f"({_escaped(surrogate.group())}), which is "
                      "not a character", file, *_surrogate_position(text, event),
                      hint="write the character itself, or its \\U escape (e.g. "
                      "\\U0001F600), not half of a UTF-16 pair")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    _fail("MLS006", "the file holds more than one YAML document", file,
                          mark.line + 1, mark.column + 1, hint="one spec per file")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    _fail("MLS010", f"nesting deeper than {MAX_DEPTH} levels", file,
                          mark.line + 1, mark.column + 1,
                          hint="a spec is a few levels deep; flatten this value")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        error_mark = exc.problem_mark or exc.context_mark
        line, col = (error_mark.line + 1, error_mark.column + 1) if error_mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        _fail("MLS011", f"YAML syntax error: {problem}", file, line, col,
              hint=_syntax_hint(exc))
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        _fail("MLS011", f"YAML syntax error: {exc}", file)
    return events


SURROGATE_RE = re.compile("[\ud800-\udfff]")
ESCAPE_RE = re.compile(r"(?<!\\)(?:\\\\)*(\\(?:u[dD][89a-fA-F][0-9a-fA-F]{2}|"
                       r"U0000[dD][89a-fA-F][0-9a-fA-F]{2}))")


def _escaped(char: str) -> str:
    return f"\\u{ord(char):04x}"


def _surrogate_position(text: str, event: yaml.ScalarEvent) -> tuple[int, int]:
    """Line and column of the escape that wrote a surrogate (else of the scalar)."""
    start, end = cast(yaml.Mark, event.start_mark), cast(yaml.Mark, event.end_mark)
    match = ESCAPE_RE.search(text, start.index, end.index)
    if match is None:
        return start.line + 1, start.column + 1
    offset = match.start(1)
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


class _EventComposer(yaml.composer.Composer, yaml.resolver.Resolver):
    """PyYAML's composer and the safe loader's resolver over events already parsed: the same
    nodes `yaml.compose(text, Loader=yaml.SafeLoader)` builds, without a second parse (the
    pure-Python parser is most of the time of loading a large spec)."""

    def __init__(self, events: list[yaml.Event]) -> None:
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._events = events
        self._next = 0

    def check_event(self, *choices: type[yaml.Event]) -> bool:
        if self._next >= len(self._events):
            return False
        return not choices or isinstance(self._events[self._next], choices)

    def peek_event(self) -> yaml.Event:
        return self._events[self._next]

    def get_event(self) -> yaml.Event:
        self._next += 1
        return self._events[self._next - 1]


def _syntax_hint(exc: yaml.MarkedYAMLError) -> str | None:
    """Say where the construct that failed began, and what usually causes the problem."""
    problem = exc.problem or ""
    if "mapping values are not allowed" in problem:
        return "check this line's indentation against the line above, or quote a value that " \
               "holds ': '"
    if "could not find expected ':'" in problem:
        return "a key needs ': ' after it; or a quote is not closed"
    if "'\\t'" in problem or "\\t" in problem:
        return "YAML indents with spaces only"
    mark = exc.context_mark
    if exc.context and mark is not None:
        what = exc.context.removeprefix("while parsing ").removeprefix("while scanning ")
        return f"in {what} that starts at line {mark.line + 1}, column {mark.column + 1}"
    return exc.context or None


YAML_1_2_BOOLS = ("true", "false")
_scalar_constructor = yaml.SafeLoader(stream="")


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value  # keep dates as written; the spec models decide what they mean
    if node.tag == "tag:yaml.org,2002:bool" and node.value.lower() not in YAML_1_2_BOOLS:
        return node.value  # YAML 1.2: 'off', 'yes', 'on', 'no' are text (batching: off)
    if node.tag.startswith("tag:yaml.org,2002:") and node.tag.rsplit(":", 1)[1] in {
        "str", "int", "float", "bool", "null"
    }:
        return _scalar_constructor.construct_object(node, deep=True)
    if node.tag == "tag:yaml.org,2002:binary":
        return node.value
    return node.value


def _build(node: yaml.Node, path: Path_, smap: SourceMap, file: str) -> Any:
    smap.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                _fail("MLS011", "a mapping key must be plain text, not a list or mapping", file,
                      key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                      hint="write keys as plain text, e.g. 'name:'")
            key = key_node.value
            if key_node.tag == "tag:yaml.org,2002:merge" or key == "<<" and key_node.style is None:
                _fail("MLS008", "YAML merge keys (<<) are not allowed in a spec", file,
                      key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                      hint="write the keys out in the mapping")
            if key in result:
                first = smap.keys[path + (key,)]
                _fail("MLS007", f"duplicate key '{key}' (first written at line {first[0]})",
                      file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                      hint="each key may appear once in a mapping")
            smap.keys[path + (key,)] = (key_node.start_mark.line + 1,
                                        key_node.start_mark.column + 1)
            result[key] = _build(value_node, path + (key,), smap, file)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), smap, file) for i, item in enumerate(node.value)]
    return _scalar(cast(yaml.ScalarNode, node))  # neither a mapping nor a sequence


def load_spec_text(text: str, file: str) -> LoadedDocument:
    _check_indentation(text, file)
    node = _EventComposer(_check_events(text, file)).get_single_node()
    if node is None:
        _fail("MLS005", "the spec is empty", file,
              hint="start from a blueprint: mlstack init DIR --blueprint churn")
    smap = SourceMap(file=file, lines=text.splitlines())
    data = _build(node, (), smap, file)
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        _fail("MLS006", f"the spec must be a mapping of keys, not {kind}", file,
              node.start_mark.line + 1, node.start_mark.column + 1,
              hint="the document starts with 'apiVersion: mlstack/v1'")
    return LoadedDocument(data=data, source_map=smap, text=text)


def load_spec_file(path: Path, display: str | None = None) -> LoadedDocument:
    """Read and load a spec file. Raises LoadFailed (with diagnostics) or OSError."""
    file = display or str(path)
    data = Path(path).read_bytes()
    return load_spec_text(decode_spec_bytes(data, file), file)
