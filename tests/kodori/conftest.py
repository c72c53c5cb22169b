"""Fixtures of the project-level tests: the real console log handler's output. The access matrix's
``world`` and a private blob store, ``blob_root``, are in ``tests/conftest.py``."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from kodori.middleware import RequestIdLogFilter


class LogLines:
    """What the console handler of settings ``LOGGING`` wrote, with its filters and format, as lines."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def text(self) -> str:
        return self.stream.getvalue()

    def about(self, *words: str) -> list[str]:
        """The lines that name every one of ``words`` (tracebacks' lines name none of them)."""
        return [line for line in self.text().splitlines() if all(word in line for word in words)]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    (handler,) = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and any(isinstance(f, RequestIdLogFilter) for f in h.filters)
    ]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield LogLines(stream)
    finally:
        handler.setStream(previous)
