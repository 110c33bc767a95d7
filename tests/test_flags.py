"""Every `--flag` that the documentation or an error message names exists in its tool's parser.

Read from README.md, docs/*.md and the UserError/ValueError messages of keras_mtl/,
data_tools/, benchmarks/ and the scripts. A flag belongs to:

- on a command line (`python train.py ...`, `python -m data_tools.flow ...`, in a code block or
  a code span): that command's tool;
- in prose: the tools named in its paragraph, else in its section (heading to heading), else
  any tool;
- in a message: the tools the message names, else the tool of its module (a script, a
  `data_tools`/`benchmarks` CLI, or the library module behind one), else any tool.

The parsers are taken from each tool's own `main` (argparse's parsing is intercepted), so the
flags checked are exactly those the tool accepts.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRIPTS = ("train", "evaluate", "export", "tune", "predict")
# Library modules behind a tool: their messages speak to that tool's user.
LIBRARY_TOOLS = {
    "keras_mtl/export.py": ("export.py",),
    "keras_mtl/evaluation.py": ("evaluate.py",),
    "keras_mtl/tuning.py": ("tune.py",),
    "keras_mtl/visualize.py": ("keras_mtl.visualize",),
    "keras_mtl/complexity.py": ("keras_mtl.complexity",),
    "keras_mtl/config.py": ("train.py", "tune.py"),
    "keras_mtl/training": ("train.py", "tune.py"),
    "keras_mtl/weighting": ("train.py", "tune.py"),
}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_]*(?![\w{<-])")  # not --num_{split}, --no_<name>
TOOL_MENTION = re.compile(
    r"\b(?:(train|evaluate|export|tune|predict)\.py"
    r"|(data_tools|benchmarks)[./](\w+)(?:\.py)?"
    r"|keras_mtl[./](visualize|complexity)(?:\.py)?)\b"
)
COMMAND = re.compile(r"\bpython3?\s+(?:-m\s+)?(\S+)")


# --------------------------------------------------------------------------------------------
# The tools and their parsers


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _tool_modules() -> dict[str, str]:
    """Tool name as the docs spell it -> the module whose `main` parses its command line."""
    tools = {f"{name}.py": name for name in SCRIPTS if (ROOT / f"{name}.py").is_file()}
    for package in ("data_tools", "benchmarks"):
        for path in sorted((ROOT / package).glob("*.py")):
            if path.stem != "__init__" and "def main(" in path.read_text():
                tools[f"{package}.{path.stem}"] = f"{package}.{path.stem}"
    tools["keras_mtl.visualize"] = "keras_mtl.visualize"
    tools["keras_mtl.complexity"] = "keras_mtl.complexity"
    return tools


def _option_strings(module_name: str, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    module = importlib.import_module(module_name)
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        try:
            module.main([])
        except _Captured as captured:
            return set(captured.parser._option_string_actions)
    raise AssertionError(f"{module_name}.main([]) parsed no command line")


@pytest.fixture(scope="module")
def tool_flags() -> dict[str, set[str]]:
    monkeypatch = pytest.MonkeyPatch()
    try:
        return {
            tool: _option_strings(module, monkeypatch) for tool, module in _tool_modules().items()
        }
    finally:
        monkeypatch.undo()


def _tool_of(match: re.Match) -> str:
    script, package, name, library = match.groups()
    if script:
        return f"{script}.py"
    if package:
        return f"{package}.{name}"
    return f"keras_mtl.{library}"


def _tools_named(text: str, known: set[str]) -> set[str]:
    return {tool for tool in map(_tool_of, TOOL_MENTION.finditer(text)) if tool in known}


# --------------------------------------------------------------------------------------------
# Where flags are named


def attribute(
    text: str, known: set[str], default: set[str] | None
) -> Iterator[tuple[str, set[str] | None]]:
    """(flag, tools it may belong to; None = any tool) for the flags in `text`.

    A flag on a `python ...` command line belongs to that command's tool (flags of other
    programs, pip or pytest, are not checked). Any other flag belongs to the tools its sentence
    names outside commands, else to `default`.
    """
    prose = []
    for piece in re.split(r"`|&&|\|\||;|\||\n", text):
        match = COMMAND.search(piece)
        if match is None:
            prose.append(piece)
            continue
        prose.append(piece[: match.start()])
        tool = _command_tool(match.group(1))
        if tool in known:
            yield from ((flag, {tool}) for flag in FLAG.findall(piece[match.end() :]))
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(prose)):
        tools = _tools_named(sentence, known) or default
        yield from ((flag, tools) for flag in FLAG.findall(sentence))


def doc_flags(path: Path, known: set[str]) -> Iterator[tuple[str, set[str] | None, str]]:
    """(flag, tools it may belong to or None for any, where) for one markdown file."""
    merged: list[tuple[int, str]] = []  # (line number, line), continuation lines joined
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if merged and merged[-1][1].endswith("\\"):
            merged[-1] = (merged[-1][0], f"{merged[-1][1][:-1]} {line.strip()}")
        else:
            merged.append((number, line))
    blocks: list[tuple[int, list[str], bool]] = []  # (first line, lines, code) of each block
    in_code = False
    for number, line in merged:
        if line.startswith("```"):
            in_code = not in_code
            blocks.append((number + 1, [], in_code))
        elif in_code or not line.strip() or re.match(r"\s*([-*]|\d+\.) |#|\|", line):
            blocks.append((number, [line], in_code))  # a list item, heading, table row
        elif blocks and blocks[-1][1] and not blocks[-1][2]:
            blocks[-1][1].append(line)  # wrapped prose continues its paragraph
        else:
            blocks.append((number, [line], False))
    for first, lines, _ in blocks:
        for flag, tools in attribute(" ".join(lines), known, None):
            yield flag, tools, f"{_display(path)}:{first}"


def _command_tool(program: str) -> str:
    """`benchmarks/run.py` -> `benchmarks.run`; `train.py`, `data_tools.flow` as they are."""
    if "/" in program and program.endswith(".py"):
        return program[: -len(".py")].replace("/", ".")
    return program


def _display(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _message_text(node: ast.expr) -> str:
    """The literal text of a message; `{}` where an f-string inserts a value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            _message_text(v) if isinstance(v, ast.Constant) else "{}" for v in node.values
        )
    if isinstance(node, ast.BinOp):
        return _message_text(node.left) + _message_text(node.right)
    return ""


def source_flags(known: set[str]) -> Iterator[tuple[str, set[str] | None, str]]:
    """(flag, tools, where) for every flag in a UserError/ValueError message of the sources."""
    files = [*(ROOT / "keras_mtl").rglob("*.py"), *(ROOT / "data_tools").glob("*.py")]
    files += [*(ROOT / "benchmarks").glob("*.py"), *ROOT.glob("*.py")]
    for path in sorted(files):
        relative = path.relative_to(ROOT).as_posix()
        module_tools = _module_tools(relative, known)
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name not in ("UserError", "ValueError"):
                continue
            text = " ".join(_message_text(argument) for argument in node.args)
            for flag, tools in attribute(text, known, module_tools):
                yield flag, tools, f"{relative}:{node.lineno}"


def _module_tools(relative: str, known: set[str]) -> set[str] | None:
    stem = relative[: -len(".py")]
    if "/" not in stem and f"{stem}.py" in known:
        return {f"{stem}.py"}
    dotted = stem.replace("/", ".")
    if dotted in known:
        return {dotted}
    for prefix, tools in LIBRARY_TOOLS.items():
        if relative == prefix or relative.startswith(prefix + "/"):
            return set(tools) & known
    if relative.startswith("data_tools/"):
        return {tool for tool in known if tool.startswith("data_tools.")}
    return None


# --------------------------------------------------------------------------------------------
# The checks


def _unknown(named, tool_flags: dict[str, set[str]]) -> list[str]:
    every = set().union(*tool_flags.values())
    problems = []
    for flag, tools, where in named:
        accepted = every if tools is None else set().union(*(tool_flags[t] for t in tools))
        if flag not in accepted:
            owners = "any tool" if tools is None else ", ".join(sorted(tools))
            problems.append(f"{where}: {flag} is not a flag of {owners}")
    return sorted(set(problems))


def test_the_parsers_were_found(tool_flags):
    for tool in ("train.py", "evaluate.py", "export.py", "tune.py", "data_tools.flow"):
        assert "--help" in tool_flags[tool], tool
    assert "--grad_norm_alpha" in tool_flags["train.py"]
    assert "--max_trials" in tool_flags["tune.py"] and "--epochs" in tool_flags["tune.py"]


def test_flags_in_the_documentation_exist(tool_flags):
    known = set(tool_flags)
    named = [
        entry
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for entry in doc_flags(path, known)
    ]
    assert len(named) > 200, "the documentation was not read"
    assert not _unknown(named, tool_flags), "\n".join(_unknown(named, tool_flags))


def test_flags_in_error_messages_exist(tool_flags):
    named = list(source_flags(set(tool_flags)))
    assert len(named) > 80, "the sources were not read"
    assert not _unknown(named, tool_flags), "\n".join(_unknown(named, tool_flags))


def test_the_reader_attributes_flags_to_their_tools(tmp_path, tool_flags):
    known = set(tool_flags)
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Train\n\n```\npython train.py --epochs 3 \\\n    --lr 1e-3 && python -m data_tools.flow"
        " --workers 2\npython3 -m pytest --dist loadgroup\n```\n\nThe `--grad_norm_alpha` flag"
        " of `evaluate.py`.\n\n- a list item with `--epochs`\n"
    )
    found = [(flag, tools) for flag, tools, _ in doc_flags(doc, known)]
    assert found == [
        ("--epochs", {"train.py"}),
        ("--lr", {"train.py"}),
        ("--workers", {"data_tools.flow"}),
        ("--grad_norm_alpha", {"evaluate.py"}),
        ("--epochs", None),
    ]
    assert _unknown([("--grad_norm_alpha", {"evaluate.py"}, "x")], tool_flags) == [
        "x: --grad_norm_alpha is not a flag of evaluate.py"
    ]
