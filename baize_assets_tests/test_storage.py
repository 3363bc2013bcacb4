import pandas as pd
import pyarrow as pa
import pytest

from baize_assets.core.storage import (
    Layout,
    read_parquet,
    seed_id,
    shard_keys,
    shard_of,
    write_parquet_atomic,
)


def test_atomic_parquet_write_replaces_whole_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "t" / "shard-0.parquet"
    schema = pa.schema([("n", pa.int64())])
    write_parquet_atomic(pd.DataFrame({"n": [1, 2]}), path, schema)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_parquet_atomic(pd.DataFrame({"n": ["not a number"]}), path, schema)
    assert read_parquet(path)["n"].tolist() == [1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["shard-0.parquet"]


def test_reading_a_missing_output_says_which_asset_to_materialize(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize its asset first"):
        read_parquet(Layout(tmp_path).transcripts("quora", 2))


def test_shards_are_stable_and_cover_every_key():
    ids = [seed_id(f"question {i}") for i in range(400)]
    shards = {shard_of(i, 4) for i in ids}
    assert shards == {0, 1, 2, 3}
    assert shard_keys(4) == ["0", "1", "2", "3"]
    assert seed_id("question 7") == seed_id("question 7")
