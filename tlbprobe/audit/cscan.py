"""A C-aware reading of one kernel source file: enough to say who calls a function.

`tlbprobe audit` must tell a call of tlb_remove_table_sync_one() from the places its name
appears without being called: its prototype (include/asm-generic/tlb.h:232), its own
definitions (mm/mmu_gather.c:269, the empty stub at include/asm-generic/tlb.h:240), a
comment that mentions it (include/asm-generic/tlb.h:812), an ``#ifndef`` of a hook name.
And it must find the calls that do not spell the name: a ``#define`` whose body calls it
(pmdp_get_lockless_sync(), include/linux/pgtable.h:579) or a ``static inline`` function
that does (tlb_flush_unshared_tables(), include/asm-generic/tlb.h:789). So this module
reads a file the way the compiler's front end would for that purpose, in pure Python:

- comments and string and character literals are blanked (same length, newlines kept, so
  every offset and line number stays the file's);
- preprocessor directives are logical lines (backslash continuations, and newlines inside
  a comment, joined); each ``#define`` is a :class:`Definition` of kind "macro";
- the ``#if``/``#ifdef``/``#elif``/``#else``/``#endif`` nesting gives every line the
  conditions it is compiled under (an include guard is not a condition);
- braces are counted outside directives; every branch of an ``#if`` starts from the
  nesting the ``#if`` had and the ``#endif`` keeps the first branch's, so the kernel's
  "``#ifdef A`` ``if (x) {`` ``#else`` ``if (y) {`` ``#endif``" stays balanced and a stub
  in an ``#else`` branch is read like any function;
- a top-level ``{`` whose head ends in a parameter list (after attributes such as
  ``__acquires(x)``) and holds no ``=`` opens a function body: a :class:`Definition` of
  kind "function", inline when its head says ``inline`` or ``__always_inline``.

It does not preprocess: both branches of an ``#if`` are read, and macros are not
expanded, except that the caller (callsites.py) follows macro bodies by name.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

#: comments, string literals and character literals, in the order the lexer meets them
_LEXEMES = re.compile(r"//[^\n]*|/\*.*?(?:\*/|\Z)|\"(?:\\.|[^\"\\\n])*\"?|'(?:\\.|[^'\\\n])*'?", re.S)
_DIRECTIVE = re.compile(r"[ \t]*#[ \t]*(\w*)[ \t]*(.*)", re.S)
_DEFINE = re.compile(r"define[ \t]+([A-Za-z_]\w*)(\([^)]*\))?")
_TOKEN = re.compile(r"[A-Za-z_]\w*|\S")
_PUNCT = re.compile(r"[{}();]")
#: replacement texts that expand to nothing (whitespace removed): "", do { } while (0), ((void)0)
_EMPTY_MACRO = re.compile(r"(do\{\}while\(0\)|\(\(void\)0\)|\(void\)0|\{\}|\(\{\}\))?;?")

#: words that may follow a parameter list before the body: sparse's lock annotations and
#: GCC attributes (``void f(void) __releases(x) {``)
KEYWORDS = frozenset({"if", "for", "while", "switch", "return", "sizeof", "typeof", "__typeof__", "do", "else",
                      "case", "goto", "defined", "_Generic", "alignof", "__alignof__", "asm", "__asm__"})
INLINE_WORDS = frozenset({"inline", "__inline", "__inline__", "__always_inline"})
#: conditions that hold wherever C is compiled: not worth a word in a report
ALWAYS = frozenset({"!__ASSEMBLY__", "!__ASSEMBLER__", "__KERNEL__"})


@dataclass(frozen=True)
class Definition:
    """A function body or a ``#define`` of one file.

    ``line`` is the line of the name; ``body`` the offsets of the function's braces or of
    the macro's replacement text; ``when`` the conditions of the line (outermost first).
    """

    name: str
    kind: str                      # "function" or "macro"
    line: int
    body: Tuple[int, int]
    when: Tuple[str, ...]
    inline: bool = False           # a function declared inline (static inline, __always_inline)
    static: bool = False
    empty: bool = False            # no statement in the body, or an empty replacement text
    display: str = ""              # how to name it: SYSCALL_DEFINE3(mremap) for a macro-made function
    name_offset: int = field(default=-1, compare=False)

    @property
    def label(self) -> str:
        return self.display or self.name


@dataclass(frozen=True)
class Occurrence:
    """One place a name of interest appears in code (not in a comment, a string, an
    ``#if`` or as a struct member).

    ``kind``: "call" (followed by ``(``), "reference" (its address taken, a function
    pointer), "export" (EXPORT_SYMBOL*), "definition" (the name a definition defines) or
    "declaration" (at file scope, followed by ``(``: a prototype, or a macro invoked there).
    ``owner`` is the definition the occurrence is inside (a function body or a macro's
    replacement text), None at file scope.
    """

    name: str
    line: int
    kind: str
    owner: Optional[Definition]
    when: Tuple[str, ...]


@dataclass
class _Frame:
    """One ``#if`` being read: the conditions of its branches so far and the brace state
    at the ``#if`` and at the end of its first branch."""

    branches: List[str]
    guard: bool
    at_if: tuple
    first_end: Optional[tuple] = None
    other_ends: List[tuple] = field(default_factory=list)


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def strip(text: str) -> Tuple[str, frozenset]:
    """The text with comments and literals blanked (quotes kept), and the offsets of the
    newlines that were inside a comment (they do not end a directive)."""
    out: List[str] = []
    in_comment: List[int] = []
    last = 0
    for m in _LEXEMES.finditer(text):
        out.append(text[last:m.start()])
        s = m.group(0)
        if s[0] == "/":
            if s[1] == "*":
                in_comment.extend(m.start() + i for i, c in enumerate(s) if c == "\n")
            out.append(_blank(s))
        else:
            out.append(s[0] + _blank(s[1:-1]) + s[-1] if len(s) > 1 and s[-1] == s[0] else s[0] + _blank(s[1:]))
        last = m.end()
    out.append(text[last:])
    return "".join(out), frozenset(in_comment)


def negate(cond: str) -> str:
    """!cond, written as a person would: !X, X (for !X), !(A && B)."""
    if re.fullmatch(r"!\s*[A-Za-z_]\w*", cond):
        return cond.lstrip("!").strip()
    if re.fullmatch(r"(defined\s*\(\s*)?[A-Za-z_]\w*\s*\)?", cond):
        return "!" + cond
    return f"!({cond})"


def _words(line: str) -> str:
    return " ".join(line.split())


class CFile:
    """One file, read once: its definitions, directives and conditions; occurrences of
    any set of names are asked for afterwards (:meth:`occurrences`)."""

    def __init__(self, text: str, path: str = "<text>"):
        self.path = path
        self.text = text
        self.code, comment_newlines = strip(text)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.code)]
        self.directives: List[Tuple[int, int, str, str]] = []   # (start, end, keyword, rest)
        self._read_directives(comment_newlines)
        self._dir_starts = [d[0] for d in self.directives]
        self.definitions: List[Definition] = []
        self._when_after: List[Tuple[str, ...]] = []            # conditions after each directive
        self._read_structure()
        self._functions = sorted((d for d in self.definitions if d.kind == "function"), key=lambda d: d.body[0])
        self._fn_starts = [d.body[0] for d in self._functions]
        self._name_at = {d.name_offset: d for d in self._functions}

    # -- reading ---------------------------------------------------------------------------

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self._line_starts, offset)

    def _read_directives(self, comment_newlines: frozenset) -> None:
        code = self.code
        n = len(code)
        pos = 0
        while pos < n:
            end = code.find("\n", pos)
            end = n if end < 0 else end
            line = code[pos:end]
            if line.lstrip(" \t").startswith("#"):
                start = pos
                while end < n and (code[pos:end].rstrip(" \t").endswith("\\") or end in comment_newlines):
                    pos = end + 1
                    end = code.find("\n", pos)
                    end = n if end < 0 else end
                logical = re.sub(r"\\[ \t]*\n", " ", code[start:end]).replace("\n", " ")
                m = _DIRECTIVE.match(logical)
                self.directives.append((start, end, m.group(1) if m else "", m.group(2).strip() if m else ""))
            pos = end + 1
        # code without directives: what the braces are counted in
        parts, last = [], 0
        for start, end, _, _ in self.directives:
            parts.append(code[last:start])
            parts.append(_blank(code[start:end]))
            last = end
        parts.append(code[last:])
        self.body_code = "".join(parts)

    def _read_structure(self) -> None:
        """One pass over directives and braces in file order."""
        frames: List[_Frame] = []
        state = ((), 0, 0)           # (open braces: tuple of def index or -1, top-level parens, head start)
        fn_heads: List[tuple] = []   # (index, name, name_offset, body_start, inline, static, display, when)
        directives = self.directives
        puncts = [(m.start(), m.group(0)) for m in _PUNCT.finditer(self.body_code)]
        events = sorted([(d[0], 0, i) for i, d in enumerate(directives)] + [(p, 1, c) for p, c in puncts])
        closed: Dict[int, int] = {}
        twins: Dict[int, List[int]] = {}
        for offset, is_punct, what in events:
            braces, parens, head = state
            if not is_punct:
                start, end, key, rest = directives[what]
                if key in ("if", "ifdef", "ifndef"):
                    cond = {"ifdef": rest.split()[0] if rest.split() else rest,
                            "ifndef": "!" + (rest.split()[0] if rest.split() else rest)}.get(key, _words(rest))
                    guard = key == "ifndef" and what == 0 and len(directives) > 1 and \
                        re.match(rf"define\s+{re.escape(rest.split()[0] if rest.split() else '?')}\b",
                                 directives[1][2] + " " + directives[1][3]) is not None
                    frames.append(_Frame([cond], guard, state))
                elif key in ("elif", "elifdef", "elifndef", "else") and frames:
                    f = frames[-1]
                    if f.first_end is None:
                        f.first_end = state
                    else:
                        f.other_ends.append(state)
                    state = f.at_if
                    cond = {"elifdef": rest.split()[0] if rest.split() else rest,
                            "elifndef": "!" + (rest.split()[0] if rest.split() else "")}.get(key, _words(rest))
                    f.branches.append(cond if key != "else" else "")
                elif key == "endif" and frames:
                    f = frames.pop()
                    if f.first_end is not None:
                        # a function opened in each branch ("#ifdef A f(int a) { #else f(void) { #endif")
                        # closes where the first branch's does
                        for end in f.other_ends + [state]:
                            for mine, first in zip(end[0], f.first_end[0]):
                                if mine >= 0 and first >= 0 and mine != first:
                                    twins.setdefault(first, []).append(mine)
                        state = f.first_end
                self._when_after.append(self._conditions(frames))
                if key == "define":
                    self._add_macro(start, end)
                continue
            if what == "{":
                if not braces and parens == 0:
                    fn = self._function_head(self.body_code[head:offset])
                    if fn is not None:
                        name, rel, inline, static, display = fn
                        idx = len(fn_heads)
                        fn_heads.append((idx, name, head + rel, offset, inline, static, display))
                        state = ((idx,), parens, head)
                        continue
                state = (braces + (-1,), parens, head)
            elif what == "}":
                if braces:
                    top = braces[-1]
                    if top >= 0:
                        closed[top] = offset + 1
                        for twin in twins.get(top, ()):
                            closed[twin] = offset + 1
                    braces = braces[:-1]
                state = (braces, parens, offset + 1 if not braces else head)
            elif not braces:
                if what == "(":
                    state = (braces, parens + 1, head)
                elif what == ")":
                    state = (braces, max(0, parens - 1), head)
                elif parens == 0:  # ";"
                    state = (braces, parens, offset + 1)
        for idx, name, name_off, body_start, inline, static, display in fn_heads:
            body_end = closed.get(idx, len(self.code))
            inner = self.body_code[body_start + 1:body_end - 1]
            self.definitions.append(Definition(name, "function", self.line_of(name_off), (body_start, body_end),
                                               self.conditions_at(name_off), inline, static,
                                               not inner.replace(";", "").strip(), display, name_off))

    def _conditions(self, frames: Sequence[_Frame]) -> Tuple[str, ...]:
        out = []
        for f in frames:
            if f.guard:
                continue
            *before, cur = f.branches
            parts = [negate(b) for b in before] + ([cur] if cur else [])
            text = " && ".join(parts) if len(parts) > 1 else parts[0] if parts else ""
            if text not in ALWAYS:
                out.append(text)
        return tuple(out)

    def _add_macro(self, start: int, end: int) -> None:
        text = self.code[start:end]
        hash_at = text.index("#")
        m = _DEFINE.match(text, re.match(r"#\s*", text[hash_at:]).end() + hash_at)
        if not m:
            return
        body = (start + m.end(), end)
        replacement = re.sub(r"\s+", "", self.code[body[0]:body[1]].replace("\\", " "))
        self.definitions.append(Definition(m.group(1), "macro", self.line_of(start + m.start(1)), body,
                                           self.conditions_at(start), empty=bool(_EMPTY_MACRO.fullmatch(replacement)),
                                           name_offset=start + m.start(1)))

    @staticmethod
    def _function_head(head: str) -> Optional[Tuple[str, int, bool, bool, str]]:
        """(name, offset of the name in head, inline, static, display) when ``head { ...``
        defines a function, else None (a struct, an initializer, a block in a macro call)."""
        items: List[Tuple[str, int, int]] = []   # (token or "()" for a group, start, end)
        depth, group_start = 0, 0
        for m in _TOKEN.finditer(head):
            t = m.group(0)
            if t == "(":
                if depth == 0:
                    group_start = m.start()
                depth += 1
            elif t == ")":
                depth -= 1
                if depth < 0:
                    return None
                if depth == 0:
                    items.append(("()", group_start, m.end()))
            elif depth == 0:
                items.append((t, m.start(), m.end()))
        if depth != 0 or not items:
            return None
        words = [t for t, _, _ in items]
        if "=" in words or words[0] in ("struct", "union", "enum", "typedef") and "()" not in words:
            return None
        # drop what follows the parameter list: IDENT(...) attributes and bare attribute words
        while len(items) >= 3 and items[-1][0] == "()" and _is_ident(items[-2][0]) and items[-3][0] == "()":
            items = items[:-2]
        while len(items) >= 2 and _is_ident(items[-1][0]) and items[-2][0] == "()":
            items = items[:-1]
        if len(items) < 2 or items[-1][0] != "()" or not _is_ident(items[-2][0]):
            return None
        name, name_start, _ = items[-2]
        if name in KEYWORDS:
            return None
        before = {t for t, _, _ in items[:-2]}
        display = ""
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", name):  # SYSCALL_DEFINE3(mremap, ...): a macro-made function
            first = re.match(r"\(\s*([A-Za-z_]\w*)", head[items[-1][1]:items[-1][2]])
            if first:
                display = f"{name}({first.group(1)})"
        return name, name_start, bool(before & INLINE_WORDS), "static" in before, display

    # -- asking ----------------------------------------------------------------------------

    def conditions_at(self, offset: int) -> Tuple[str, ...]:
        """The conditions the code at ``offset`` is compiled under, outermost first."""
        i = bisect.bisect_right(self._dir_starts, offset) - 1
        while i >= 0 and self.directives[i][0] <= offset < self.directives[i][1]:
            i -= 1  # inside a directive: the conditions before it
        return self._when_after[i] if i >= 0 else ()

    def _directive_at(self, offset: int) -> Optional[int]:
        i = bisect.bisect_right(self._dir_starts, offset) - 1
        if i >= 0 and offset < self.directives[i][1]:
            return i
        return None

    def _function_at(self, offset: int) -> Optional[Definition]:
        i = bisect.bisect_right(self._fn_starts, offset) - 1
        if i >= 0 and offset < self._functions[i].body[1]:
            return self._functions[i]
        return None

    def occurrences(self, names: Iterable[str]) -> List[Occurrence]:
        """Every place one of ``names`` appears in code, in file order."""
        names = sorted(set(names), key=len, reverse=True)
        if not names:
            return []
        rx = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")
        macros = {d.body: d for d in self.definitions if d.kind == "macro"}
        out: List[Occurrence] = []
        code = self.code
        for m in rx.finditer(code):
            pos, name = m.start(), m.group(0)
            before = code[max(0, pos - 64):pos].rstrip()
            if before.endswith(".") or before.endswith("->"):
                continue  # a struct member of the same name (pv_ops.mmu.tlb_remove_table)
            after = code[m.end():m.end() + 64].lstrip()
            called = after.startswith("(")
            line = self.line_of(pos)
            d = self._directive_at(pos)
            if d is not None:
                start, end, key, _ = self.directives[d]
                if key != "define":
                    continue  # #ifdef NAME, #undef NAME, #if defined(NAME): not code
                owner = next((md for body, md in macros.items() if body[0] <= pos < body[1]), None)
                if owner is None:
                    continue  # the macro's own name
                out.append(Occurrence(name, line, "call" if called else "reference", owner, owner.when))
                continue
            fn = self._function_at(pos)
            if fn is not None:
                out.append(Occurrence(name, line, "call" if called else "reference", fn, self.conditions_at(pos)))
                continue
            when = self.conditions_at(pos)
            if pos in self._name_at:
                out.append(Occurrence(name, line, "definition", self._name_at[pos], when))
            elif re.search(r"\bEXPORT_\w*SYMBOL\w*\s*\(\s*$", before):
                out.append(Occurrence(name, line, "export", None, when))
            elif called:
                out.append(Occurrence(name, line, "declaration", None, when))
            else:
                out.append(Occurrence(name, line, "reference", None, when))
        return out

    def definitions_of(self, name: str) -> List[Definition]:
        return [d for d in self.definitions if d.name == name]


def _is_ident(t: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*", t))


@dataclass(frozen=True)
class Located:
    """A definition with the file it is in (relative to the tree)."""

    file: str
    definition: Definition = field(compare=False)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.definition.line}"
