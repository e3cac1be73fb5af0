"""Numbered, actionable errors. The CLI prints `Error E123: message` and exits 2; the API maps
them to 4xx responses. Codes: E1xx data, E2xx encoder/model bundle, E3xx training/eval, E4xx serving."""

from __future__ import annotations


class SharelensError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"Error {self.code}: {self.message}"
