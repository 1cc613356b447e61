"""A small C-API lint for kernels/pymodule.c (../shared/docs/STYLE.md, rule 17).

Checks that every buffer acquired with PyObject_GetBuffer (directly, or through a helper that
acquires into its caller's Py_buffer) is released with PyBuffer_Release in the same function, that
no Python API is touched between Py_BEGIN_ALLOW_THREADS and Py_END_ALLOW_THREADS, and that no kernel
file besides the binding includes Python.h. A line containing ``capi-lint: ignore`` is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "kernels"
IGNORE_MARKER = "capi-lint: ignore"

GET_BUFFER = re.compile(r"\bPyObject_GetBuffer\s*\(\s*[^,]+,\s*([^,]+),")
ALLOW_THREADS = re.compile(r"Py_BEGIN_ALLOW_THREADS(.*?)Py_END_ALLOW_THREADS", re.DOTALL)
PYTHON_NAME = re.compile(r"\b_?Py[A-Za-z0-9_]*")
FUNCTION_HEADER = re.compile(r"(\w+)\s*\(([^;{}]*)\)\s*$")


def strip_code(source: str) -> str:
    """Drops ignored lines, comments and string literals (newlines kept) so that only code is matched."""
    kept = "\n".join("" if IGNORE_MARKER in line else line for line in source.splitlines())
    pattern = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', re.DOTALL)
    return pattern.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), kept)


def functions(code: str) -> dict[str, tuple[list[str], str]]:
    """Top-level function definitions: name -> (parameter names, body)."""
    found: dict[str, tuple[list[str], str]] = {}
    depth, header_start, body_start = 0, 0, 0
    for position, char in enumerate(code):
        if char == "{":
            if depth == 0:
                header, body_start = code[header_start:position], position
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                match = FUNCTION_HEADER.search(header)
                if match and not header.rstrip().endswith("="):
                    params = [p.split()[-1].lstrip("*") for p in match.group(2).split(",") if p.split()]
                    found[match.group(1)] = (params, code[body_start : position + 1])
                header_start = position + 1
        elif char == ";" and depth == 0:
            header_start = position + 1
    return found


def released(body: str, view: str) -> bool:
    name = re.escape(view.lstrip("&").strip())
    return re.search(rf"\bPyBuffer_Release\s*\(\s*&?\s*{name}\s*\)", body) is not None


def lint(source: str) -> list[str]:
    """Every problem found in one C file's text, as messages."""
    code = strip_code(source)
    defined = functions(code)
    problems: list[str] = []
    acquirers: dict[str, int] = {}
    for name, (params, body) in defined.items():
        for view in GET_BUFFER.findall(body):
            view = view.strip()
            if not released(body, view):
                problems.append(f"{name}: PyObject_GetBuffer into {view} without PyBuffer_Release")
            bare = view.lstrip("&").strip()
            if not view.startswith("&") and bare in params:
                acquirers[name] = params.index(bare)
    for name, (_, body) in defined.items():
        for helper, position in acquirers.items():
            for call in re.finditer(rf"\b{helper}\s*\(([^;]*?)\)\s*[<;|)]", body):
                arguments = [argument.strip() for argument in call.group(1).split(",")]
                if len(arguments) > position and not released(body, arguments[position]):
                    problems.append(
                        f"{name}: {helper}() acquires {arguments[position]} without PyBuffer_Release"
                    )
    for block in ALLOW_THREADS.findall(code):
        for python_name in PYTHON_NAME.findall(block):
            problems.append(f"{python_name} used between Py_BEGIN_ALLOW_THREADS and Py_END_ALLOW_THREADS")
    return problems


def test_pymodule_passes_the_lint() -> None:
    source = (KERNELS / "pymodule.c").read_text()
    assert "PyObject_GetBuffer" in source and "Py_BEGIN_ALLOW_THREADS" in source
    assert lint(source) == []


def test_only_the_binding_includes_python_h() -> None:
    offenders = [
        path.name
        for path in sorted(KERNELS.glob("*.[ch]"))
        if path.name != "pymodule.c" and re.search(r"#\s*include\s*[<\"]Python\.h", path.read_text())
    ]
    assert offenders == []


GOOD = """
static int acquire(Py_buffer *view, PyObject *obj) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) { return -1; }
    if (view->ndim != 1) { PyBuffer_Release(view); return -1; }
    return 0;
}
static PyObject *entry(PyObject *module, PyObject *obj) {
    Py_buffer a = {0};
    Py_buffer b = {0};
    if (PyObject_GetBuffer(obj, &a, PyBUF_C_CONTIGUOUS) < 0) { goto error; }
    if (acquire(&b, obj) < 0) { goto error; }
    Py_BEGIN_ALLOW_THREADS
    work(a.buf, b.buf);
    Py_END_ALLOW_THREADS
error:
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return NULL;
}
"""


def test_lint_accepts_a_correct_binding() -> None:
    assert lint(GOOD) == []


def test_lint_finds_a_direct_buffer_never_released() -> None:
    problems = lint(GOOD.replace("    PyBuffer_Release(&a);\n", ""))
    assert problems == ["entry: PyObject_GetBuffer into &a without PyBuffer_Release"]


def test_lint_finds_a_helper_acquired_buffer_never_released() -> None:
    problems = lint(GOOD.replace("    PyBuffer_Release(&b);\n", ""))
    assert problems == ["entry: acquire() acquires &b without PyBuffer_Release"]


def test_lint_finds_python_api_with_the_gil_released() -> None:
    bad = GOOD.replace("    work(a.buf, b.buf);\n", "    work(a.buf, b.buf);\n    Py_DECREF(obj);\n")
    assert lint(bad) == ["Py_DECREF used between Py_BEGIN_ALLOW_THREADS and Py_END_ALLOW_THREADS"]


def test_lint_ignore_marker_and_comments() -> None:
    marked = GOOD.replace("    work(a.buf, b.buf);\n", "    PyErr_CheckSignals(); /* capi-lint: ignore */\n")
    assert lint(marked) == []
    commented = GOOD.replace("    work(a.buf, b.buf);\n", "    work(a.buf); /* not PyErr_Occurred() */\n")
    assert lint(commented) == []
