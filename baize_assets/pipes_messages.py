"""Reading a Pipes child's messages one whole line at a time.

Dagster's file message readers tail the message file with ``readline()``, which returns a
line the child is still writing as if it were whole: a message that spans a page of the
file can be seen half written, fails to parse, and stops the reader thread, so every later
message (the training summary among them) is lost. Seen with the training summary of a
torchrun launch. These readers keep a line until its newline has arrived.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from threading import Event
from typing import Callable, Iterator

from dagster import PipesFileMessageReader, PipesSubprocessClient, PipesTempFileMessageReader
from dagster._core.pipes.context import PipesMessageHandler
from dagster_pipes import PipesParams


def complete_lines(path: str, should_stop: Callable[[], bool], poll_s: float = 0.01) -> Iterator[str]:
    """The lines of the file at ``path`` as they are written, each once it is whole; once ``should_stop()``
    holds (the child is done), the rest of the file."""
    with open(path, encoding="utf-8") as stream:
        partial = ""
        while True:
            partial += stream.readline()
            if partial.endswith("\n"):
                yield partial
                partial = ""
            elif should_stop():
                yield from (partial + stream.read()).splitlines(keepends=True)
                return
            else:
                time.sleep(poll_s)


class WholeLineFileMessageReader(PipesFileMessageReader):
    """:class:`PipesFileMessageReader` that parses only whole lines."""

    def _reader_thread(self, handler: PipesMessageHandler, is_resource_complete: Event) -> None:
        try:
            for line in complete_lines(self._path, is_resource_complete.is_set):
                handler.handle_message(json.loads(line))
        except BaseException:
            handler.report_pipes_framework_exception(f"{self.__class__.__name__} reader thread", sys.exc_info())
            raise


class WholeLineTempFileMessageReader(PipesTempFileMessageReader):
    """:class:`PipesTempFileMessageReader` that parses only whole lines."""

    @contextmanager
    def read_messages(self, handler: PipesMessageHandler) -> Iterator[PipesParams]:
        with tempfile.TemporaryDirectory() as folder:
            reader = WholeLineFileMessageReader(os.path.join(folder, "messages"),
                                                include_stdio_in_messages=self._include_stdio_in_messages)
            with reader.read_messages(handler) as params:
                yield params


def subprocess_client(**options) -> PipesSubprocessClient:
    """A :class:`PipesSubprocessClient` whose messages are read one whole line at a time."""
    return PipesSubprocessClient(message_reader=WholeLineTempFileMessageReader(), **options)

