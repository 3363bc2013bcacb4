"""A Pipes message read only once its line is whole: a child's message seen half written is not lost."""

import sys
import threading
import time
from pathlib import Path

from dagster import AssetExecutionContext, PipesSubprocessClient, asset, materialize

from baize_assets.pipes_messages import complete_lines, subprocess_client

# A child whose message lines reach the file in two writes, 0.3 s apart, as a write that spans
# pages of the file can be seen by a reader: the reader meets the first half alone.
CHILD = """
import json, time
import dagster_pipes

def write_in_two(self, message):
    line = json.dumps(message) + "\\n"
    with open(self._path, "a", encoding="utf-8") as stream:
        stream.write(line[: len(line) // 2])
        stream.flush()
        time.sleep(0.3)
        stream.write(line[len(line) // 2 :])

dagster_pipes.PipesFileMessageWriterChannel.write_message = write_in_two
with dagster_pipes.open_dagster_pipes() as pipes:
    pipes.report_custom_message({"summary": "x" * 5000})
"""


def test_lines_are_given_whole_and_the_rest_when_the_writer_is_done(tmp_path):
    path = tmp_path / "messages"
    path.write_text("")
    done = threading.Event()

    def writer() -> None:
        with open(path, "a") as stream:
            stream.write('{"a": "first ')
            stream.flush()
            time.sleep(0.2)
            stream.write('half"}\n{"b": 2}\n{"c": 3')
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    lines = list(complete_lines(str(path), done.is_set))
    thread.join()
    assert lines == ['{"a": "first half"}\n', '{"b": 2}\n', '{"c": 3']


def _messages_through(client: PipesSubprocessClient, tmp_path: Path) -> list:
    received = []

    @asset
    def child_reports(context: AssetExecutionContext, pipes: PipesSubprocessClient):
        invocation = pipes.run(context=context, command=[sys.executable, "-c", CHILD], cwd=str(tmp_path))
        received.extend(invocation.get_custom_messages())
        return invocation.get_materialize_result()

    materialize([child_reports], resources={"pipes": client}, raise_on_error=False)
    return received


def test_a_message_seen_half_written_reaches_the_step(tmp_path):
    assert _messages_through(subprocess_client(), tmp_path) == [{"summary": "x" * 5000}]
    # Dagster's own reader parses the half it meets first and loses the message: the case is real.
    assert _messages_through(PipesSubprocessClient(), tmp_path) == []
