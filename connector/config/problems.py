"""A problem found in the configuration, located by file, line, section and key."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

MAX_PROBLEMS = 200
"""Problems reported for one file; past it they are only counted ("and N more")."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the configuration, located by file, line, section and key."""

    section: str
    key: str
    line: int
    message: str
    hint: str = ""
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        section = f" [{self.section}]" if self.section else ""
        key = f" {self.key}" if self.key else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{section}{key}: {self.message}{hint}"


def format_problems(problems: list[ConfigProblem]) -> str:
    """One line per problem, in file and line order."""
    return "\n".join(str(p) for p in problems)


def did_you_mean(word: str, choices: list[str], otherwise: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else otherwise
