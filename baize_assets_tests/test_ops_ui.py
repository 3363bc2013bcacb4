"""The Dagster UI and its GraphQL API on a running deployment: webserver, daemon, browser.

The webserver and the daemon serve ``ops_location`` (the small ``ops_baize.yaml``) from a
temporary SQLite instance; the graph is first materialized in full, as a deployment that
has run for a while would be. The UI is checked in headless Chromium, and a one-shard
backfill is launched through GraphQL and carried out by the daemon, which is killed and
restarted in the middle of it.
"""

import os
import signal
import time
from pathlib import Path

import pytest
from dagster import AssetSelection, DagsterRunStatus, RunsFilter

from baize_assets.assets import adapter_key, transcripts_key
from baize_assets.demo import materialize_whole_graph
from baize_assets.teacher.server import SimulatedTeacher

from .ops_support import all_materializations, materializations
from .ops_ui_support import (
    TEACHER_KEY,
    Deployment,
    chromium_page,
    graph_node_names,
    graphql,
    listening_addresses,
    log_tail,
    require_chromium,
    wait_for,
)

# End to end through real Dagster runs and services: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

# Set to a path (e.g. docs/lineage.png) to keep the lineage screenshot there.
SCREENSHOT_ENV = "BAIZE_LINEAGE_SCREENSHOT"

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
BACKFILL_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on Error { message }
  }
}
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """The webserver on a free port with its default host, over a fully materialized graph."""
    root = tmp_path_factory.mktemp("ui")
    with SimulatedTeacher(api_key=TEACHER_KEY) as teacher, pytest.MonkeyPatch.context() as env:
        deployment = Deployment(root, teacher.base_url)
        # No --host: what a user gets when they do not say otherwise.
        with deployment.webserver("webserver") as webserver:
            # The graph is built in this process while the webserver starts.
            for name in ("DAGSTER_HOME", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
                env.setenv(name, deployment.env[name])
            with deployment.instance() as instance:
                materialize_whole_graph(deployment.defs, deployment.config, instance, log=lambda _: None)
            deployment.wait_until_serving(webserver, "webserver")
            yield deployment


def test_webserver_listens_on_loopback_only_by_default(deployment):
    assert listening_addresses(deployment.port) == {"127.0.0.1"}


def test_ui_draws_every_asset_of_the_graph(deployment, tmp_path):
    require_chromium()
    asset_keys = sorted(key.to_user_string() for key in deployment.defs.resolve_asset_graph().get_all_asset_keys())
    assert len(asset_keys) == 13  # with costs/forecast

    # The welcome dialog a new instance shows over the UI, marked seen as its Skip button does.
    assert graphql(deployment.base_url, "mutation { setNuxSeen }")["setNuxSeen"]
    with chromium_page(tmp_path / "profile", width=2400, height=1700) as page:
        page.goto(f"{deployment.base_url}/assets")
        page.locator(f"a[href='/assets/{asset_keys[-1]}']").first.wait_for()
        hrefs = page.locator("a[href^='/assets/']").evaluate_all("links => links.map(a => a.getAttribute('href'))")
        assert {href.removeprefix("/assets/") for href in hrefs} >= set(asset_keys)

        page.goto(f"{deployment.base_url}/asset-groups")
        page.get_by_text("base_models").first.wait_for()
        # Large graphs open with their groups collapsed; the UI's shortcut expands them all.
        page.keyboard.press("Alt+e")
        expected_names = sorted(key.split("/")[-1] for key in asset_keys)
        wait_for(
            "every asset node to be drawn",
            lambda: sorted(graph_node_names(page)) == expected_names,
            timeout_s=30,
            on_timeout=lambda: f"drawn: {sorted(graph_node_names(page))}\nexpected: {expected_names}",
        )
        # The expanded groups are in the URL: opened afresh, the graph is laid out to fit the page.
        page.goto(page.url)
        wait_for(
            "every node to show its materialization",
            lambda: page.get_by_text("Loading").count() == 0 and len(graph_node_names(page)) == len(asset_keys),
            timeout_s=30,
        )
        assert page.get_by_text("Never materialized").count() == 0
        # The graph alone on the page: no navigation, no asset tree; one step out from the
        # opening zoom so the whole shape, group titles included, is on the page.
        page.get_by_text("Hide navigation").click()
        page.locator("button:has([aria-label='panel_show_right'])").click()
        page.locator("button:has([aria-label='zoom_out'])").click()
        page.wait_for_timeout(1000)  # the zoom animates
        screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "lineage.png")
        page.screenshot(path=str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_shard_backfill_through_graphql_survives_a_daemon_restart(deployment):
    shard = "1"
    selection = AssetSelection.assets(transcripts_key("medquad")).downstream()
    selected = selection.resolve(deployment.defs.resolve_asset_graph())
    with deployment.instance() as instance:
        records_before = all_materializations(instance)
        runs_before = {run.run_id for run in instance.get_runs()}

        launched = graphql(
            deployment.base_url,
            LAUNCH_BACKFILL,
            {"params": {"assetSelection": [{"path": key.path} for key in selected], "partitionNames": [shard]}},
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def backfill_runs():
            return instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))

        def started_training_run():
            for run in backfill_runs():
                if adapter_key("baize_healthcare") in (run.asset_selection or ()):
                    return run if run.status == DagsterRunStatus.STARTED else None
            return None

        def finished_status():
            status = backfill_status(deployment, backfill_id)
            return status if status in FINISHED else None

        def daemon_context():
            runs = [(run.asset_selection, run.status) for run in backfill_runs()]
            return log_tail(deployment.log("daemon-1"), deployment.log("daemon-2")) + f"\nbackfill runs: {runs}"

        with deployment.daemon("daemon-1") as first_daemon:
            run = wait_for("the backfill's training run to start", started_training_run, 150, daemon_context)
            # The daemon dies mid-run, without a chance to clean up.
            os.kill(first_daemon.pid, signal.SIGKILL)
            first_daemon.wait()
            killed_at = time.time()
            wait_for(
                "the training run to finish with no daemon up",
                lambda: instance.get_run_by_id(run.run_id).is_finished,
                120,
                daemon_context,
            )
        training = instance.get_run_record_by_id(run.run_id)
        assert training.dagster_run.status == DagsterRunStatus.SUCCESS
        assert training.end_time > killed_at

        with deployment.daemon("daemon-2"):
            status = wait_for("the backfill to finish after the restart", finished_status, 90, daemon_context)
        assert status == "COMPLETED_SUCCESS"

        # This shard's conversations and what depends on them, each once; no other run.
        new_runs = [run for run in instance.get_runs() if run.run_id not in runs_before]
        assert {run.run_id for run in new_runs} == {run.run_id for run in backfill_runs()}
        assert all(run.status == DagsterRunStatus.SUCCESS for run in new_runs)
        backfilled = sorted(m for run in new_runs for m in materializations(instance, run.run_id))
        assert backfilled == sorted(
            [
                ("medquad/transcripts", shard),
                ("medquad/conversations", shard),
                ("baize_healthcare/training_set", None),
                ("baize_healthcare/adapter", None),
                ("baize_healthcare/evaluation", None),
            ]
        )
        # No record was lost: all the earlier ones are still there, plus exactly these.
        assert all_materializations(instance) == records_before + len(backfilled)
        assert instance.get_latest_materialization_event(adapter_key("baize_healthcare")).run_id == run.run_id


FINISHED = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def backfill_status(deployment: Deployment, backfill_id: str) -> str:
    result = graphql(deployment.base_url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    assert result["__typename"] == "PartitionBackfill", result
    return result["status"]


def test_corpus_shard_materialization_shows_its_plots_in_the_ui(deployment, tmp_path):
    from dagster import AssetRecordsFilter

    from baize_assets.assets import conversations_key

    require_chromium()
    shard = "0"
    with deployment.instance() as instance:
        (record,) = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=conversations_key("medquad"), asset_partitions=[shard]), limit=1
        ).records
    plots = record.asset_materialization.metadata["plots"].value
    sources = [part.split(")")[0] for part in plots.split("](")[1:]]
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)

    assert graphql(deployment.base_url, "mutation { setNuxSeen }")["setNuxSeen"]
    with chromium_page(tmp_path / "profile", width=1600, height=1200) as page:
        # The shard's latest materialization, focused in the asset's event list.
        page.goto(f"{deployment.base_url}/assets/medquad/conversations?view=events&partition={shard}")
        # Markdown this long sits behind a link in the metadata table, which opens it in a dialog.
        row = page.locator("tr").filter(has=page.get_by_text("plots", exact=True))
        row.get_by_text("[Show Markdown]").click()
        images = page.locator("[role='dialog'] img")

        def rendered():
            found = images.evaluate_all(
                """imgs => imgs.map(i => {
                    const box = i.getBoundingClientRect();
                    return {src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0,
                            width: box.width, height: box.height};
                })"""
            )
            return found if len(found) == 2 and all(i["loaded"] for i in found) else None

        shown = wait_for(
            "the shard's two plots to render in the dialog",
            rendered,
            timeout_s=30,
            on_timeout=lambda: page.locator("[role='dialog']").inner_html()[:2000],
        )
    # The sanitizer let the data URIs through unchanged, and the browser drew them.
    assert [image["src"] for image in shown] == sources
    assert all(image["width"] > 0 and image["height"] > 0 for image in shown)
