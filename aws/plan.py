"""The steps a command takes, printed as they are decided, so --dry-run shows the same list."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal, TextIO

Action = Literal["create", "update", "delete", "run", "keep"]

_MARKS: dict[Action, str] = {"create": "+", "update": "~", "delete": "-", "run": ">", "keep": "="}


@dataclass(frozen=True)
class Step:
    """One decided step: what kind of change, on what."""

    action: Action
    what: str


@dataclass
class Plan:
    """Collects and prints steps; with dry_run the caller skips every change it records."""

    title: str
    dry_run: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        suffix = " (dry run: nothing will change)" if self.dry_run else ""
        print(f"{self.title}{suffix}", file=self.out)

    def change(self, action: Action, what: str) -> bool:
        """Record a change; True when the caller should make it (not a dry run)."""
        self._add(Step(action, what))
        return not self.dry_run

    def keep(self, what: str) -> None:
        """Record something already as wanted."""
        self._add(Step("keep", what))

    def note(self, text: str) -> None:
        """Print a line that is not a step (a hint, a warning, a result)."""
        print(f"  {text}", file=self.out)

    @property
    def changes(self) -> list[Step]:
        """Steps that change something (everything but `keep`)."""
        return [s for s in self.steps if s.action != "keep"]

    def _add(self, step: Step) -> None:
        self.steps.append(step)
        verb = step.action if step.action != "keep" else "ok"
        print(f"  {_MARKS[step.action]} {verb:<7}{step.what}", file=self.out)
