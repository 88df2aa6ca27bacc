"""Problems found in manifests: each names the file, the document, the field and the line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input. doc is 1-based; 0 means the whole file."""

    file: str
    doc: int
    path: str  # field path like spec.containers[0].image; "" for the document or file itself
    line: int | None
    reason: str

    def __str__(self) -> str:
        parts = [self.file]
        if self.doc:
            parts.append(f"document {self.doc}")
        where = self.path
        if self.line is not None:
            where = f"{where} (line {self.line})" if where else f"line {self.line}"
        if where:
            parts.append(where)
        parts.append(self.reason)
        return ": ".join(parts)


class ManifestError(Exception):
    """Every problem found in the files given, raised once so the user can fix them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
