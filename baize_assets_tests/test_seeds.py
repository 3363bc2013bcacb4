import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from baize_assets.core.config import SourceConfig, load_config
from baize_assets.core.seeds import (
    SeedFileError,
    load_seed_table,
    normalize_text,
    strip_html,
)
from baize_assets.core.storage import seed_id, shard_of


def source(tmp_path: Path, fmt: str, files: dict[str, str | bytes], **extra) -> SourceConfig:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return SourceConfig(name="s", format=fmt, paths=[str(tmp_path / n) for n in files], shards=4, **extra)


QUORA = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"


@pytest.mark.parametrize("name", ["quora", "stackoverflow", "medquad", "alpaca"])
def test_sample_seeds_load_with_at_least_40_per_source(name):
    config = load_config()
    table = load_seed_table(config.source(name))
    assert len(table.seeds) >= 40
    assert table.seeds["seed_id"].is_unique
    assert (table.seeds["seed"].str.len() > 0).all()
    assert set(table.seeds["shard"]) <= set(range(config.source(name).shards))


def test_every_sample_file_contributes():
    config = load_config()
    origins = set()
    for name in ("stackoverflow", "medquad"):
        origins |= {o.split(":")[0].split("#")[0] for o in load_seed_table(config.source(name)).seeds["origin"]}
    assert {"Questions.csv", "questions.parquet", "medquad.csv"} <= origins
    assert any(o.endswith(".xml") for o in origins)


def test_medquad_exact_duplicates_are_dropped():
    table = load_seed_table(load_config().source("medquad"))
    assert table.duplicates_dropped == 2
    assert table.rows_read == len(table.seeds) + 2


def test_ids_and_shards_are_stable_functions_of_the_normalized_text(tmp_path):
    rows = QUORA + "0\t1\t2\t  Why is   the sky\u00a0blue? \t x\t0\n1\t3\t4\tWhy is the sky blue?\tx\t0\n"
    table = load_seed_table(source(tmp_path, "quora_tsv", {"q.tsv": rows}))
    assert len(table.seeds) == 1 and table.duplicates_dropped == 1
    row = table.seeds.iloc[0]
    assert row["seed"] == "Why is the sky blue?"
    assert row["seed_id"] == seed_id("Why is the sky blue?")
    assert row["shard"] == shard_of(row["seed_id"], 4)
    assert row["origin"] == "q.tsv:2"


def test_stackoverflow_csv_and_parquet_strip_html(tmp_path):
    csv_text = (
        "Id,OwnerUserId,CreationDate,ClosedDate,Score,Title,Body\n"
        '1,NA,2008-08-01T00:00:00Z,NA,3,"Sort a dict, by value",'
        '"<p>I have a <code>dict</code> &amp; want\nit sorted.</p>"\n'
    )
    parquet = tmp_path / "q.parquet"
    pq.write_table(
        pa.table({"id": [1], "title": ["Undo a git commit"], "body": ["<p>How do I <b>undo</b>?</p>"]}), parquet
    )
    config = source(tmp_path, "stackoverflow", {"Questions.csv": csv_text})
    config = config.model_copy(update={"paths": [*config.paths, str(parquet)]})
    seeds = load_seed_table(config).seeds.set_index("seed")
    assert seeds.loc["Sort a dict, by value", "context"] == "I have a dict & want it sorted."
    assert seeds.loc["Undo a git commit", "context"] == "How do I undo?"
    assert strip_html("<pre><code>a &lt; b</code></pre>") == " a < b"


def test_medquad_xml_folder(tmp_path):
    doc = (
        '<?xml version="1.0"?><Document id="1"><Focus>Gout</Focus><QAPairs>'
        '<QAPair pid="1"><Question qid="1-1">What is (are) Gout ?</Question><Answer>A.</Answer></QAPair>'
        '<QAPair pid="2"><Question qid="1-2"> </Question><Answer>B.</Answer></QAPair>'
        "</QAPairs></Document>"
    )
    config = source(tmp_path, "medquad", {"xml/0001_Gout.xml": doc})
    config = config.model_copy(update={"paths": [str(tmp_path / "xml")]})
    table = load_seed_table(config)
    assert table.seeds["seed"].tolist() == ["What is (are) Gout ?"]
    assert table.quarantine.to_dict("records") == [
        {"origin": "0001_Gout.xml#QAPair2", "reason": "empty question", "raw": " "}
    ]


def test_alpaca_pairs_keep_their_response(tmp_path):
    records = [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        {"instruction": "No answer.", "input": "", "output": ""},
    ]
    table = load_seed_table(source(tmp_path, "alpaca_json", {"a.json": json.dumps(records)}))
    assert dict(zip(table.seeds["seed"], table.seeds["response"])) == {
        "Add the numbers. 2 and 3": "5",
        "Say hi.": "Hi!",
    }
    assert table.quarantine["reason"].tolist() == ["empty response"]


def test_generic_formats_for_new_domains(tmp_path):
    jsonl = '{"q": "What is an index fund?"}\n\n{"q": "How do bonds work?"}\n'
    table = load_seed_table(source(tmp_path, "jsonl", {"f.jsonl": jsonl}, text_field="q"))
    assert sorted(table.seeds["seed"]) == ["How do bonds work?", "What is an index fund?"]
    csv_table = load_seed_table(
        source(tmp_path, "csv", {"f.csv": "question,topic\nWhat is a crop rotation?,farming\n"}, text_field="question")
    )
    assert csv_table.seeds["seed"].tolist() == ["What is a crop rotation?"]


def test_empty_question_rows_are_quarantined_with_their_line(tmp_path):
    rows = QUORA + "0\t1\t2\tFirst question?\tx\t0\n1\t3\t4\t   \tx\t0\n2\t5\t6\tThird question?\tx\t0\n"
    table = load_seed_table(source(tmp_path, "quora_tsv", {"q.tsv": rows}))
    assert len(table.seeds) == 2
    assert table.quarantine[["origin", "reason"]].to_dict("records") == [
        {"origin": "q.tsv:3", "reason": "empty question"}
    ]


@pytest.mark.parametrize(
    "fmt, name, content, message",
    [
        ("quora_tsv", "q.tsv", "", "q.tsv: file is empty"),
        ("quora_tsv", "q.tsv", QUORA, "q.tsv:2: file has a header but no rows"),
        ("quora_tsv", "q.tsv", "id,question1\n1,Why?\n", "q.tsv:1: missing column 'question1'"),
        ("quora_tsv", "q.tsv", (QUORA + "0\t1\t2\tcaf\xe9?\tx\t0\n").encode("latin-1"), "q.tsv:2: not valid UTF-8"),
        ("quora_tsv", "q.tsv", QUORA + "0\t1\t2\tq?\tx\t0\textra\n", "q.tsv:2: row has 7 fields"),
        ("stackoverflow", "Questions.csv", "Id,Body\n1,<p>x</p>\n", "Questions.csv:1: missing column 'Title'"),
        ("stackoverflow", "q.parquet", b"not parquet at all", "q.parquet: not a readable Parquet file"),
        ("medquad", "d.xml", "<Document>\n<QAPairs>\n<QAPair>", "d.xml:3: not well-formed XML"),
        ("medquad", "d.xml", "<root><item/></root>", "d.xml:1: not a MedQuAD document"),
        ("alpaca_json", "a.json", '[\n{"instruction": "x",\n}', "a.json:3: not valid JSON"),
        ("alpaca_json", "a.json", '{"instruction": "x"}', "a.json:1: expected a JSON array"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, fmt, name, content, message):
    with pytest.raises(SeedFileError) as error:
        load_seed_table(source(tmp_path, fmt, {name: content}))
    assert message in str(error.value)


def test_missing_seed_file_names_it(tmp_path):
    config = SourceConfig(name="s", format="text", paths=[str(tmp_path / "gone.txt")])
    with pytest.raises(SeedFileError, match=r"gone\.txt: seed file of source 's' not found"):
        load_seed_table(config)


def test_normalize_text():
    assert normalize_text("  a\tb\r\n c\u00a0 ") == "a b c"
    assert normalize_text("e\u0301") == "\u00e9"
