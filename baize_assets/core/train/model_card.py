"""The model card of a trained adapter: ``README.md`` with Hugging Face model-card front matter.

The card is rendered from the files training leaves in the adapter directory (the
summary and the run config), so it always describes the weights beside it. Training
writes it with what training knows; the adapter asset rewrites it with the lineage of
the training set (sources, counts per source and split, per-shard data versions).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..corpus.schema import data_version
from ..costs.actuals import DATA_COST_KEY
from ..prompts import AI, BAIZE_SYSTEM_PROMPT, CHAT_FORMAT_VERSION, HUMAN, STOP_MARKERS
from ..storage import read_parquet, read_parquet_schema, write_text_atomic

# The files of an adapter directory the card is rendered from (written by train/summary.py).
SUMMARY_FILE = "training_summary.json"
CONFIG_FILE = "training_config.json"

MODEL_CARD_FILE = "README.md"
# The weights derive from the base model and from a teacher model's output, each under its own terms.
LICENSE_NAME = "baize-base-model-and-teacher-terms"
TAGS = ("baize", "lora", "self-chat", "conversational", "text-generation")
_LINEAGE_COLUMNS = ["seed_id", "text", "source", "shard", "split"]


def training_set_lineage(training_set: Path) -> dict:
    """Where a training-set Parquet file's conversations came from: sources, splits, shards, data versions.

    A shard's version is the data version of the conversations the set kept from it
    (after deduplication), so it changes exactly when that shard's part of the set does.
    """
    training_set = Path(training_set) if isinstance(training_set, str) else training_set
    if not training_set.is_file():
        raise FileNotFoundError(f"training set not found: {training_set}")
    schema = read_parquet_schema(training_set)
    present = set(schema.names)
    missing = [column for column in _LINEAGE_COLUMNS if column not in present]
    if missing:
        raise ValueError(f"training set {training_set} lacks the column(s) {', '.join(missing)}")
    frame = read_parquet(training_set, columns=_LINEAGE_COLUMNS)
    counts = frame.groupby(["source", "split"]).size()
    cost = (schema.metadata or {}).get(DATA_COST_KEY)
    return {
        "data_cost": json.loads(cost) if cost else None,
        "training_set": str(training_set),
        "data_version": data_version(frame),
        "conversations": len(frame),
        "counts": {
            source: {split: int(counts.get((source, split), 0)) for split in ("train", "eval")}
            for source in sorted(frame["source"].unique())
        },
        "shards": {
            f"{source}/{shard}": data_version(rows)
            for (source, shard), rows in sorted(frame.groupby(["source", "shard"]), key=lambda item: item[0])
        },
    }


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} is not a trained adapter directory: {path.name} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def card_metadata(summary: dict, run_config: dict) -> dict:
    """The front matter the Hub indexes: base model, library, license, datasets, tags, evaluation."""
    adapter = run_config["adapter"]
    metadata = {
        "base_model": summary["base_model"],
        "library_name": "peft",
        "license": "other",
        "license_name": LICENSE_NAME,
        "datasets": [f"training_sets/{adapter['name']}"],
        "tags": [*TAGS, *adapter["sources"]],
        "pipeline_tag": "text-generation",
    }
    if summary.get("eval_loss_after") is not None:
        result = {
            "task": {"type": "text-generation", "name": "held-out next-token loss"},
            "dataset": {"name": f"training_sets/{adapter['name']} (eval split)", "type": "baize-self-chat"},
            "metrics": [{"type": "loss", "name": "eval loss per AI token", "value": summary["eval_loss_after"]}],
        }
        metadata["model-index"] = [{"name": adapter["name"], "results": [result]}]
    return metadata


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _lineage_section(lineage: dict | None, summary: dict, sources: list[str]) -> list[str]:
    if lineage is None:
        return [
            f"Sources: {', '.join(f'`{s}`' for s in sources)}. Data version `{summary.get('data_version')}`; "
            f"{summary.get('n_train')} conversations trained on, {summary.get('n_eval')} held out."
        ]
    rows = "\n".join(
        f"| `{source}` | {n['train']} | {n['eval']} | {n['train'] + n['eval']} |"
        for source, n in lineage["counts"].items()
    )
    shards = "\n".join(f"| `{shard}` | `{version}` |" for shard, version in lineage["shards"].items())
    return [
        f"Training set `{lineage['training_set']}`, data version `{lineage['data_version']}` (a fingerprint of every "
        f"conversation's seed id and text), {lineage['conversations']} conversations:",
        f"| source | train | eval | total |\n|---|---|---|---|\n{rows}",
        "Data version of the conversations kept from each corpus shard (after deduplication across shards):",
        f"| shard | data version |\n|---|---|\n{shards}",
        *_data_cost_line(lineage.get("data_cost")),
    ]


def _data_cost_line(cost: dict | None) -> list[str]:
    if not cost or cost.get("dollars") is None:
        return []
    return [f"The data cost ${cost['dollars']:.4f} of teacher calls (retries and rejected conversations included), "
            f"${cost['dollars_per_conversation']:.6f} per conversation of the training set."]


def _starting_point(summary: dict) -> str:
    """What the loss before training was measured on: the base, or the adapter training started from (Baize v2
    starts from v1, whose loss that is, not the base's)."""
    init = summary.get("init_adapter")
    return f"starting adapter `{Path(init).name}` (v1)" if init else "base model"


def _objective_row(summary: dict) -> str:
    """The training table's row for a preference objective; a supervised run's table needs none."""
    if summary.get("objective") != "dpo":
        return ""
    dpo = summary["dpo"]
    return (
        f"| objective | DPO ({dpo['loss_type']}, beta {dpo['beta']:g}, learning rate {dpo['learning_rate']:g}) on "
        f"{summary['pairs']} best-vs-worst answer pairs, reference `{summary['init_adapter']}`; DPO loss "
        f"{dpo['dpo_loss_first']:.4f} -> {dpo['dpo_loss_final']:.4f}, reward margin {dpo['reward_margin_final']:.4f}, "
        f"accuracy {dpo['reward_accuracy_final']:.2f} |\n"
    )


def render_model_card(adapter_dir: Path, lineage: dict | None = None) -> str:
    """The card of the trained adapter in ``adapter_dir`` (its summary and config), with ``lineage`` if given."""
    adapter_dir = Path(adapter_dir)
    summary = _read_json(adapter_dir / SUMMARY_FILE)
    run_config = _read_json(adapter_dir / CONFIG_FILE)
    adapter = run_config["adapter"]
    name, lora, training = adapter["name"], summary["lora"], summary["training"]
    front = yaml.safe_dump(card_metadata(summary, run_config), sort_keys=False, allow_unicode=True)
    config_yaml = yaml.safe_dump(adapter, sort_keys=False, allow_unicode=True)
    stops = ", ".join(f'"{m}"' for m in STOP_MARKERS)
    stops_prose = " and ".join(f"`{m}`" for m in STOP_MARKERS)
    sections = [
        f"---\n{front}---",
        f"# Baize adapter `{name}`",
        f"A LoRA adapter (r={lora['r']}, alpha={lora['alpha']}, on {', '.join(lora['target_modules'])}) for "
        f"`{summary['base_model']}`, fine-tuned in the manner of [Baize](https://arxiv.org/abs/2304.01196) on "
        f"multi-turn self-chat conversations seeded from {', '.join(f'`{s}`' for s in adapter['sources'])}: a "
        "teacher model wrote both sides of each conversation, and the loss is on the AI turns.",
        "## How to use",
        "The tokenizer carries a chat template that renders `system` / `user` / `assistant` messages in the exact "
        "text the adapter was trained on, so any tool that reads the chat template prompts it correctly:",
        "```python\nfrom peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
        'model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/folder")\n'
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")\n'
        'messages = [{"role": "user", "content": "How do I make a good cup of coffee?"}]\n'
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")\n"
        f"output = model.generate(**inputs, max_new_tokens=256, stop_strings=[{stops}], tokenizer=tokenizer)\n```",
        f"Stop generating at {stops_prose}: the model ends each answer with the next speaker's marker (set them as "
        "stop sequences in vLLM, TGI or Ollama). `baize chat --adapter path/to/this/folder` does all this, and "
        "`baize export --adapter path/to/this/folder --to DIR` writes the merged model.",
        "## Prompt format",
        f"Format version `{CHAT_FORMAT_VERSION}`. Every training sample and every prompt starts with the same system "
        f"prompt, Baize's training header plus its guardrail; turns follow as `\\n{HUMAN} ...` and `\\n{AI} ...`, and "
        f"the prompt for an answer ends with `\\n{AI}`. The system prompt:",
        f"> {BAIZE_SYSTEM_PROMPT}",
        "A system message replaces it; the adapter was trained under this one only.",
        "## Training",
        "| | |\n|---|---|\n"
        f"{_objective_row(summary)}"
        f"| steps | {summary['steps']} (saved: step {summary.get('saved_step')}) |\n"
        f"| effective batch | {training['effective_batch_size']} (micro-batch {training['micro_batch_size']}) |\n"
        f"| learning rate | {training['learning_rate']:g}, warmup steps: {summary.get('warmup_steps')} |\n"
        f"| cutoff | {training['cutoff_len']} tokens, longer conversations: {training['overflow']} |\n"
        f"| loss on | {training['loss_on']} tokens; {summary.get('trained_tokens')} trained of "
        f"{summary.get('tokens_seen')} seen |\n"
        f"| device | {summary.get('device')}, {summary.get('dtype')}, quantization {training['quantization']} |\n"
        f"| time | {summary.get('train_seconds')} s of training |\n"
        f"| trainable parameters | {summary.get('trainable_parameters')} of {summary.get('total_parameters')} |",
        f"The adapter's configuration as trained:\n\n```yaml\n{config_yaml}```",
        "## Data lineage",
        *_lineage_section(lineage, summary, adapter["sources"]),
        "## Evaluation",
        "Mean next-token loss per AI token on the held-out conversations "
        f"({summary.get('eval_samples')} samples of {summary.get('n_eval')} conversations):",
        "| model | eval loss |\n|---|---|\n"
        f"| {_starting_point(summary)} | {_figure(summary.get('eval_loss_before'))} |\n"
        f"| with this adapter | {_figure(summary.get('eval_loss_after'))} |",
        summary.get("eval_note") or f"Best eval loss at step {summary.get('best_step')}.",
        "## Intended use and limitations",
        "For research on chat fine-tuning and for serving as a chat assistant where its answers are reviewed. "
        "It is not for medical, legal or financial advice, even when trained on healthcare seeds.",
        "The guardrail is the system prompt, which tells the model to decline unethical, controversial or sensitive "
        "topics; it was trained under that prompt, yet it is an instruction, not a safety system: the model can "
        "still produce harmful, biased or false text, and a different system message removes it.",
        "The conversations were written by a teacher model and inherit its errors and biases; the answers can "
        "sound confident and be wrong.",
        "## License",
        "The adapter derives from the base model and from the teacher model's output, each under its own terms "
        "(the base model's license, the teacher provider's terms of use, the seed datasets' licenses). Set "
        "`license` to what those terms allow before publishing this folder.",
    ]
    return "\n\n".join(sections) + "\n"


def write_model_card(adapter_dir: Path, lineage: dict | None = None) -> Path:
    """Write (or replace) ``adapter_dir/README.md``, atomically."""
    return write_text_atomic(render_model_card(adapter_dir, lineage), Path(adapter_dir) / MODEL_CARD_FILE)
