"""Scale-out: steps of several shards executed by two Celery workers over RabbitMQ.

One pair of workers serves every test of this module (starting them, and loading the
code in them, is most of each test's time); each test starts its own simulated teacher
where the workers' OPENAI_BASE_URL points, and counts only its own runs.
"""

import json
import uuid

import pytest

from baize_assets.assets import seed_key, transcripts_key
from baize_assets.core.config.pipeline import load_config

from . import ops_location
from .ops_support import RABBITMQ, REDIS, REDIS_URL, materialized_in_run, require_service, write_config
from .scale_out_support import (
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
LIMITED_SEEDS = {"faq": 140}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """The workers, with the ops location's code and, for the limit test, BAIZE_CONFIG's."""
    require_service("RabbitMQ", RABBITMQ)
    require_service("Redis", REDIS)
    root = tmp_path_factory.mktemp("celery")
    # Read when a worker first loads the definitions, so written before the workers start.
    limits = limited_config(root, 4, LIMITED_SEEDS, "redis")
    env = {
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
