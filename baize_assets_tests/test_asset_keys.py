"""The lineage view reads without hovering: each box is one owner, each node says what it is."""

from collections import defaultdict

from baize_assets.core.config.pipeline import PipelineConfig, load_config
from baize_assets.core.storage import Layout
from baize_assets.definitions import build_definitions


def test_every_asset_sits_in_its_owners_group_under_a_label_unique_there():
    graph = build_definitions(load_config()).resolve_asset_graph()
    labels = defaultdict(list)
    for key in graph.get_all_asset_keys():
        owner, *_, label = key.path
        assert len(key.path) == 2, f"{key.to_user_string()}: keys are <owner>/<what it is>"
        assert graph.get(key).group_name == owner, f"{key.to_user_string()} is in group {graph.get(key).group_name}"
        labels[owner].append(label)
    for owner, names in labels.items():
        assert len(names) == len(set(names)), f"group {owner} draws two nodes with one label: {sorted(names)}"
    config = load_config()
    adapter = config.adapters[0].name
    assert {"training_set", "adapter", "evaluation"} <= set(labels[adapter])
    assert set(labels[config.sources[0].name]) >= {"seed_questions", "conversations"}


def test_two_v2_adapters_of_one_v1_own_their_samples_and_scores(tmp_path):
    config = PipelineConfig.model_validate({
        "sources": [{"name": "faq", "format": "text", "paths": [str(tmp_path / "faq.txt")]}],
        "adapters": [{"name": "bot", "sources": ["faq"]}],
        "self_distillation": [
            {"adapter": "bot", "name": "bot_sft"},
            {"adapter": "bot", "name": "bot_dpo", "objective": "dpo"},
        ],
    })
    keys = {key.to_user_string() for key in build_definitions(config).resolve_asset_graph().get_all_asset_keys()}
    for v2 in ("bot_sft", "bot_dpo"):
        assert {f"{v2}/faq_samples", f"{v2}/faq_scores", f"{v2}/training_set", f"{v2}/adapter"} <= keys
    layout = Layout(tmp_path)
    assert layout.feedback_scores("bot_sft", "faq", 0) != layout.feedback_scores("bot_dpo", "faq", 0)
