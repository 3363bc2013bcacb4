"""One shard collected by several processes: the rows one process makes, faults that say which process failed.

The teacher is the simulated one over real HTTP; the collectors are real spawned
processes sharing a SQLite limit store and the transcript cache.
"""

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from baize_assets.assets import seed_key, transcripts_key
from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.errors import BUDGET_EXHAUSTED
from baize_assets.core.collect.parallel import CollectionProcessError, SharedStores, collect_transcripts_in_processes
from baize_assets.core.collect.shared_limits import SqliteLimitStore
from baize_assets.core.collect.state import CacheSpec
from baize_assets.core.config.pipeline import (
    PROJECT_ROOT,
    BudgetConfig,
    PipelineConfig,
    RateLimitStoreConfig,
    SourceConfig,
    TeacherConfig,
)
from baize_assets.teacher.server import SimulatedTeacher

from .collection_support import make_seeds
from .ops_support import CommandLineDeployment, write_faq_csv

CHAT = "/v1/chat/completions"
TWO = TeacherConfig(max_concurrency=4, processes=2)


def chat_requests(server: SimulatedTeacher) -> int:
    return server.stats()["requests_by_path"].get(CHAT, 0)


def pids_in(line: str) -> list[int]:
    """The collector processes' ids in the line that announces them."""
    return [int(pid) for pid in re.findall(r"pid (\d+)", line)]


def stores(folder: Path) -> SharedStores:
    return SharedStores(RateLimitStoreConfig(), folder / "limits.sqlite", CacheSpec(folder / "cache.sqlite", "cache"))


def one_process_rows(seeds: pd.DataFrame, base_url: str) -> pd.DataFrame:
    return collect_transcripts(seeds, TWO.model_copy(update={"processes": 1}), "sk-test", base_url,
                               lambda _: None).transcripts


def test_two_processes_make_the_rows_one_process_makes_and_a_rerun_asks_nothing(tmp_path, teacher):
    seeds, lines = make_seeds(90), []
    before = chat_requests(teacher)
    result = collect_transcripts_in_processes(seeds, TWO, "sk-test", stores(tmp_path), teacher.base_url, lines.append)
    assert chat_requests(teacher) - before == len(seeds) == result.requests == result.usage.calls[TWO.model]
    assert any(line.startswith("self-chat in 2 processes: 45 seeds in pid") for line in lines)
    assert any(line.startswith("[process 2/2] self-chat: 45/45 conversations") for line in lines)
    reference = one_process_rows(seeds, teacher.base_url)
    pd.testing.assert_frame_equal(result.transcripts, reference)
    assert result.transcripts["seed_id"].is_unique and result.transcripts["seed_id"].is_monotonic_increasing

    lines.clear()
    before = chat_requests(teacher)
    again = collect_transcripts_in_processes(seeds, TWO, "sk-test", stores(tmp_path), teacher.base_url, lines.append)
    assert chat_requests(teacher) == before and again.cached == len(seeds)
    assert not any("processes" in line for line in lines)  # the cache answered in this process
    pd.testing.assert_frame_equal(again.transcripts.drop(columns="cached"), reference.drop(columns="cached"))



def test_two_processes_ask_the_judge_as_one_process_does(tmp_path, teacher):
    from baize_assets.core.collect.modes import REFERENCE_WRITER
    from baize_assets.core.evaluate.judge import judge_requests

    questions = [f"How do I look after plant number {i}?" for i in range(6)]
    requests = judge_requests(questions, [f"Water plant {i} weekly." for i in range(6)], ["Give it light."] * 6)
    lines: list[str] = []
    result = collect_transcripts_in_processes(requests, TWO, "sk-test", stores(tmp_path), teacher.base_url,
                                              lines.append, writer=REFERENCE_WRITER)
    assert any(line.startswith("[process 2/2] teacher: 6/6 answers") for line in lines)
    one = collect_transcripts(requests, TWO.model_copy(update={"processes": 1}), "sk-test", teacher.base_url,
                              lambda _: None, writer=REFERENCE_WRITER).transcripts
    pd.testing.assert_frame_equal(result.transcripts, one)
    assert (result.transcripts["generation_mode"] == "judge").all()

def test_a_budget_is_one_ledger_for_every_process(tmp_path, teacher):
    capped = TWO.model_copy(update={"max_tokens": 400, "budget": BudgetConfig(max_tokens=8000)})
    result = collect_transcripts_in_processes(make_seeds(60), capped, "sk-test", stores(tmp_path), teacher.base_url,
                                              lambda _: None, ledger="run-1")
    store = SqliteLimitStore(stores(tmp_path).limit_store_path)
    spent, _ = store.spent("run-1")
    store.close()
    assert result.partial and result.failures[BUDGET_EXHAUSTED] > 0
    assert spent == result.spent_tokens <= 8000
    assert len(result.transcripts) == 60 and result.transcripts["seed_id"].is_unique


@pytest.mark.slow
def test_a_collector_process_killed_with_sigkill_fails_naming_it_and_the_rerun_completes(tmp_path):
    seeds, pids = make_seeds(160), []

    def log(line: str) -> None:
        if line.startswith("self-chat in 2 processes"):
            pids.extend(pids_in(line))

    slow = TWO.model_copy(update={"max_concurrency": 2})
    with SimulatedTeacher(latency_s=0.05) as server:
        def kill_the_second_when_busy() -> None:
            deadline = time.monotonic() + 60
            while (len(pids) < 2 or chat_requests(server) < 40) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(pids[1], signal.SIGKILL)

        killer = threading.Thread(target=kill_the_second_when_busy, daemon=True)
        killer.start()
        with pytest.raises(CollectionProcessError, match=r"collector process 2 of 2 \(pid \d+; 80 seeds, seed_id "
                                                         r"\w+ to \w+\) was killed by SIGKILL before it finished"):
            collect_transcripts_in_processes(seeds, slow, "sk-test", stores(tmp_path), server.base_url, log)
        killer.join()
        with TranscriptCache(tmp_path / "cache.sqlite") as cache:
            done = cache.count()
        assert 0 < done < len(seeds)
        before = chat_requests(server)
        rerun = collect_transcripts_in_processes(seeds, TWO, "sk-test", stores(tmp_path), server.base_url,
                                                 lambda _: None)
        assert chat_requests(server) - before == len(seeds) - done == rerun.requests
        reference = one_process_rows(seeds, server.base_url)
    pd.testing.assert_frame_equal(rerun.transcripts.drop(columns="cached"), reference.drop(columns="cached"))


PARENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from baize_assets.core.config.pipeline import RateLimitStoreConfig, TeacherConfig
    from baize_assets.core.collect.parallel import SharedStores, collect_transcripts_in_processes
    from baize_assets.core.collect.state import CacheSpec
    from baize_assets_tests.collection_support import make_seeds

    folder, base_url = Path(sys.argv[1]), sys.argv[2]
    stores = SharedStores(RateLimitStoreConfig(), folder / "limits.sqlite", CacheSpec(folder / "cache.sqlite", "cache"))
    collect_transcripts_in_processes(make_seeds(400), TeacherConfig(max_concurrency=2, processes=2), "sk-test",
                                     stores, base_url, lambda line: print(line, flush=True))
    """
)


def test_collector_processes_die_with_their_parent(tmp_path):
    with SimulatedTeacher(latency_s=0.05) as server:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), server.base_url], cwd=PROJECT_ROOT,
                                  stdout=subprocess.PIPE, text=True, env=env)
        line = parent.stdout.readline()
        assert line.startswith("self-chat in 2 processes"), line
        pids = pids_in(line)
        deadline = time.monotonic() + 30
        while chat_requests(server) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids):
            assert time.monotonic() < deadline, "a collector process outlived its parent"
            time.sleep(0.05)
        sent = chat_requests(server)
        time.sleep(0.3)
        assert chat_requests(server) == sent < 400  # nobody is spending any more


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.slow
def test_a_dagster_step_with_two_processes_writes_the_one_process_table(tmp_path, teacher):
    """``dagster asset materialize`` under the multiprocess executor: the step's own process spawns the collectors."""
    csv = write_faq_csv(tmp_path / "faq.csv", [f"How does garden topic {n} work?" for n in range(40)])
    config = PipelineConfig(teacher=TeacherConfig(max_concurrency=4, processes=2, progress_every_s=1), sources=[
        SourceConfig(name="faq", format="csv", text_field="question", paths=[str(csv)], shards=1)])
    (tmp_path / "run").mkdir()
    deployment = CommandLineDeployment(tmp_path / "run", config, teacher.base_url)
    assert deployment.materialize_here([seed_key("faq")]).success
    with deployment.materialize_process("transcripts", transcripts_key("faq"), "0") as run:
        assert run.wait(timeout=180) == 0, deployment.log("transcripts").read_text()[-3000:]
    log = deployment.log("transcripts").read_text()
    assert "self-chat in 2 processes: 20 seeds in pid" in log and "[process 2/2] self-chat: 20/20" in log
    written = pd.read_parquet(deployment.layout.transcripts("faq", 0))
    seeds = pd.read_parquet(deployment.layout.seeds("faq"))
    assert len(written) == 40 and written["failure_kind"].isna().all()
    pd.testing.assert_frame_equal(written, one_process_rows(seeds, teacher.base_url))
    assert not [p.name for p in deployment.layout.transcripts("faq", 0).parent.iterdir() if p.name.endswith(".tmp")]


def test_processes_must_be_at_least_one_and_are_for_chat_collection():
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TeacherConfig(processes=0)
    with pytest.raises(ValueError, match="processes .2. is for api 'chat'"):
        TeacherConfig(processes=2, api="batch")
