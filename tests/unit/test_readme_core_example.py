"""The README's example of the identifier core runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_core_example_prints_what_it_promises():
    section = README.read_text().split("### Prepare identifiers without Airflow", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    promised = [line.split("# ", 1)[1].strip() for line in code.splitlines() if "  # " in line]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {})
    assert printed.getvalue().splitlines() == promised
