"""Scale-out: steps of several shards executed by two Celery workers over RabbitMQ, as on two machines.

The workers share no folder: each has local folders of its own, the outputs are on a
SeaweedFS S3 server, the instance and the collection's state (``state_store: postgres``)
in PostgreSQL, the teacher's limit in Redis. One pair of workers serves every test of this
module (starting them, and loading the code in them, is most of each test's time); each
test starts its own simulated teacher where the workers' OPENAI_BASE_URL points, and counts
only its own runs.
"""

import json
import uuid
from pathlib import Path

import pytest

from baize_assets.assets import seed_key, transcripts_key
from baize_assets.core.config.pipeline import StateStoreConfig, load_config
from baize_assets.core.storage import Layout, read_table

from . import ops_location
from .ops_support import RABBITMQ, REDIS, REDIS_URL, materialized_in_run, require_service, write_config
from .scale_out_support import (
    CHAT,
    LIMITED_TEACHER,
    assert_the_limit_held,
    celery_deployment,
    celery_worker_hosts,
    limited_config,
    transcripts_steps_at_once,
)

# End to end through real Dagster runs and services: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

LOCATION = ["-m", "baize_assets_tests.ops_location"]
DEFINITIONS = ["-m", "baize_assets.definitions"]
# ``twice`` is the source whose one shard both workers collect at once.
LIMITED_SEEDS = {"faq": 140, "twice": 40}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, s3_store):
    """The workers, with the ops location's code and, for the limit and state tests, BAIZE_CONFIG's."""
    require_service("RabbitMQ", RABBITMQ)
    require_service("Redis", REDIS)
    root = tmp_path_factory.mktemp("celery")
    # Read when a worker first loads the definitions, so written before the workers start.
    limits = limited_config(root, 4, LIMITED_SEEDS, "redis")
    limits = limits.model_copy(update={"state_store": StateStoreConfig(kind="postgres")})
    env = {
        "BAIZE_OUTPUT_DIR": f"{s3_store}/celery",
        "BAIZE_CONFIG": str(write_config(limits, root / "baize.yaml")),
        "BAIZE_REDIS_URL": REDIS_URL,
        "OPENAI_API_KEY": f"sk-test-{uuid.uuid4().hex}",  # a limit key of these tests' own
    }
    with celery_deployment(root, ("celery-a", "celery-b"), env) as deployment:
        yield deployment


def test_shards_run_their_steps_on_both_celery_workers(deployment, monkeypatch):
    seeds = [seed_key(source.name) for source in ops_location.config.sources]
    assert deployment.materialize_here(ops_location.config, seeds, monkeypatch).success
    with deployment.teacher(latency_s=0.2):
        shards = ["0", "1", "2"]  # the teacher_api pool lets all three call the teacher at once
        deployment.run_at_once([["job", "execute", *LOCATION, "-j", "medquad_corpus",
                                 "--tags", json.dumps({"dagster/partition": shard})] for shard in shards])

    with deployment.instance(monkeypatch) as instance:
        corpus_runs = [r for r in instance.get_runs() if r.job_name == "medquad_corpus"]
        assert sorted(r.tags["dagster/partition"] for r in corpus_runs) == shards
        for run in corpus_runs:
            assert materialized_in_run(instance, run.run_id) >= {
                ("medquad/transcripts", run.tags["dagster/partition"]),
                ("medquad/conversations", run.tags["dagster/partition"]),
            }
        hosts = celery_worker_hosts(instance, [run.run_id for run in corpus_runs])
    assert hosts == set(deployment.workers)


def test_two_celery_workers_share_one_limit_through_redis(deployment, monkeypatch):
    """Shard steps on two dagster-celery workers over RabbitMQ, their limit in Redis (the
    store for workers on several machines), the instance in PostgreSQL."""
    config = load_config(deployment.env["BAIZE_CONFIG"])  # what the workers load
    assert deployment.materialize_here(config, [seed_key("faq")], monkeypatch).success
    transcripts = ["asset", "materialize", *DEFINITIONS, "--select", transcripts_key("faq").to_user_string()]
    with deployment.teacher(**LIMITED_TEACHER) as server:
        deployment.run_at_once([[*transcripts, "--partition", str(shard)] for shard in range(4)])
        assert_the_limit_held(server, LIMITED_SEEDS["faq"])
    with deployment.instance(monkeypatch) as instance:
        run_ids = [run.run_id for run in instance.get_runs()
                   if transcripts_key("faq") in (run.asset_selection or ())]
        hosts = celery_worker_hosts(instance, run_ids)
        steps_at_once = transcripts_steps_at_once(instance, run_ids)
    assert len(run_ids) == 4
    assert hosts == set(deployment.workers) and steps_at_once == 2


def test_one_shard_collected_twice_at_once_on_two_machines_pays_each_prompt_once(deployment, monkeypatch):
    """Two runs of one shard, one on each worker: the PostgreSQL lease lets one collect while
    the other waits, then the other finds every conversation in the PostgreSQL cache. With
    SQLite state each worker would have had a cache of its own, and paid for every prompt."""
    config = load_config(deployment.env["BAIZE_CONFIG"])
    assert deployment.materialize_here(config, [seed_key("twice")], monkeypatch).success
    command = ["asset", "materialize", *DEFINITIONS, "--select", transcripts_key("twice").to_user_string(),
               "--partition", "0"]
    with deployment.teacher(latency_s=0.3) as server:
        deployment.run_at_once([command, command])
        assert server.stats()["requests_by_path"][CHAT] == LIMITED_SEEDS["twice"]
    with deployment.instance(monkeypatch) as instance:
        runs = [run.run_id for run in instance.get_runs() if transcripts_key("twice") in (run.asset_selection or ())]
        hosts = celery_worker_hosts(instance, runs)
        messages = [event.user_message for run in runs for event in instance.all_logs(run)]
    assert len(runs) == 2 and hosts == set(deployment.workers)
    assert any(message.startswith("waiting for the lease twice/transcripts/shard-0") for message in messages)
    assert read_table(Layout(deployment.env["BAIZE_OUTPUT_DIR"]).transcripts("twice", 0)).num_rows == \
        LIMITED_SEEDS["twice"]
    # Nothing of this source's state (cache, lease) is on either worker's disk.
    workers_local = list(Path(deployment.env["DAGSTER_HOME"]).parent.glob("*-local"))
    assert len(workers_local) == 2 and not [
        path for folder in workers_local for path in folder.rglob("*") if "twice" in path.parts]
