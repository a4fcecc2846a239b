"""A griffe extension for the API pages: the library's docstrings are reST-flavoured (roles such as
:func:`x`, ``double backticks``, doctest blocks, ``::`` literal blocks, one simple table), and
mkdocstrings renders Markdown. Before a docstring is parsed, this rewrites those few forms into
their Markdown equivalents; the words are not changed.

Loaded by mkdocs.yml (plugins: mkdocstrings: handlers: python: options: extensions).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref|doc):`([^`]+)`")
DOUBLE = re.compile(r"``(.+?)``")
TABLE_RULE = re.compile(r"^\s*=+( +=+)+\s*$")
DIRECTIVE = re.compile(r"\s*# doctest:.*$")


def _role(match: re.Match[str]) -> str:
    target = match.group(1)
    if "<" in target and target.endswith(">"):  # :func:`text <target>`
        target = target.split("<", 1)[0].strip()
    elif target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target.lstrip('.')}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence(lines: list[str], language: str, indent: str) -> list[str]:
    return [f"{indent}```{language}", *lines, f"{indent}```"]


def _table(block: list[str]) -> list[str]:
    """A reST simple table (its rule lines included) as a Markdown table."""
    rule = block[0]
    spans = [m.span() for m in re.finditer(r"=+", rule)]
    rules = [k for k, line in enumerate(block) if TABLE_RULE.match(line)]

    def cells(line: str) -> list[str]:
        return [line[a:(spans[k + 1][0] if k + 1 < len(spans) else None)].strip() for k, (a, _) in enumerate(spans)]

    head = cells(block[1]) if len(rules) == 3 else [""] * len(spans)
    rows = [cells(line) for k, line in enumerate(block) if k > (rules[1] if len(rules) == 3 else 0)
            and k not in rules and line.strip()]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(spans)]
    return ["", *out, *("| " + " | ".join(row) + " |" for row in rows), ""]


def rest_to_markdown(text: str) -> str:
    """The docstring ``text`` with doctests, literal blocks, simple tables and roles in Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(">>>"):  # a doctest block: to the next blank line
            indent = line[: _indent(line)]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(DIRECTIVE.sub("", lines[i]))  # `# doctest: +ELLIPSIS` is for the test runner
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += _fence(block, "pycon", indent)
            continue
        if TABLE_RULE.match(line):  # a simple table: to the rule that a blank line or the end follows
            block = [line]
            i += 1
            while i < len(lines):
                block.append(lines[i])
                i += 1
                if TABLE_RULE.match(block[-1]) and (i == len(lines) or not lines[i].strip()):
                    break
            out += _table(block)
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):  # a literal block follows
            out.append(line[:-1] if stripped != "::" else "")
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            base = _indent(line)
            block = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            depth = min((_indent(b) for b in block if b.strip()), default=0)
            out += ["", *_fence([b[depth:] for b in block], "text", line[:base]), ""]
            continue
        previous = out[-1] if out else ""
        if (stripped.startswith(("- ", "* ")) and previous.strip() and not previous.lstrip().startswith(("- ", "* "))
                and _indent(previous) == _indent(line) and not previous.rstrip().endswith("```")):
            out.append("")  # Markdown needs a blank line before a list
        out.append(line)
        i += 1
    fenced = "\n".join(out)
    # roles and double backticks, outside fences only
    parts = re.split(r"(```.*?```)", fenced, flags=re.DOTALL)
    return "".join(p if p.startswith("```") else DOUBLE.sub(r"`\1`", ROLE.sub(_role, p)) for p in parts)


class RestToMarkdown(Extension):
    """Rewrite every docstring once, when its object is loaded."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rest_to_markdown(obj.docstring.value)
