"""The paid stages of a configuration, priced before a run: what each would ask, and what it would cost.

* **transcripts** of each self-chat source (the selected shards): one row per seed;
* **ratings** of the judge filter (when on): one judgment per kept conversation, exact where
  the corpus shard exists, else one per seed;
* **scores** of each Baize v2 entry: one judgment per sampled answer (k per chosen seed),
  exact where the samples exist, else from the conversations (or seeds) they would answer;
* **judgments** of each judged evaluation: the teacher's reference answers (shared by every
  adapter, cached once) and two judgments per question and adapter.

Rows the caches already hold are free; nothing is sent and no file is written. The local
model's work (sampling answers, training) costs compute, not API money, and is not priced.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..collect.batch import batch_price
from ..collect.cache import CollectionStats, cache_key
from ..collect.modes import REFERENCE_WRITER, Writer, judge_writer, self_chat_writer
from ..collect.results import generation_inputs, history_key
from ..collect.state import StateStore
from ..config.pipeline import PipelineConfig, SelfDistillationConfig, SourceConfig, TeacherConfig
from ..corpus import judge_filter
from ..evaluate import judge as judge_eval
from ..feedback import self_distill
from ..prompts import (
    COMPARE_ANSWERS_FORMAT,
    RATE_CONVERSATION_FORMAT,
    SCORE_ANSWER_FORMAT,
    Turn,
    compare_answers_prompt,
    rate_conversation_prompt,
    score_answer_prompt,
)
from ..seeds.table import load_seed_table
from ..storage import Layout, read_parquet
from .forecast import MIN_HISTORY_ROWS, StageForecast, forecast_stage

TRANSCRIPTS, RATINGS, SCORES, JUDGMENTS = "transcripts", "ratings", "scores", "judgments"
STAGES = (TRANSCRIPTS, RATINGS, SCORES, JUDGMENTS)


@dataclass(frozen=True)
class Selection:
    """What to price: some sources (None: all), some shards (None: all), some stages."""

    sources: tuple[str, ...] | None = None
    shards: tuple[int, ...] | None = None
    stages: tuple[str, ...] = STAGES

    def shard_list(self, source: SourceConfig) -> list[int]:
        return [s for s in range(source.shards) if self.shards is None or s in self.shards]


def _read_cache(store: StateStore, path: Path, keys: Iterable[str],
                history: str) -> tuple[set[str], CollectionStats]:
    """The keys a cache holds and its cost history, without creating a SQLite cache that does not exist."""
    if not store.has_cache(path):
        return set(), CollectionStats()
    try:
        with store.cache(path) as cache:
            return cache.stored_keys(keys), cache.collection_history(history)
    except sqlite3.Error as error:
        raise OSError(f"cannot read the cache {path}: {error}") from None


def _history(store: StateStore, paths: Iterable[Path], key: str) -> CollectionStats:
    total = CollectionStats()
    for path in paths:
        total = total + _read_cache(store, path, [], key)[1]
    return total


def _store(config: PipelineConfig, layout: Layout) -> StateStore:
    return StateStore(config.state_store, layout.state)


def _price(settings: TeacherConfig):
    return batch_price(settings) if settings.api == "batch" else settings.prices.get(settings.model)


def _stage(store: StateStore, name: str, settings: TeacherConfig, writer: Writer, texts: list[str], cache: Path,
           fallback_caches: Iterable[Path] = (), reuse: bool = True) -> StageForecast:
    """Price ``texts`` (one row each) against ``cache`` (every row asked again unless ``reuse``); the history of
    ``fallback_caches`` when its own is short."""
    inputs, key = generation_inputs(settings, writer), history_key(settings, writer)
    keys = [cache_key(text, inputs) for text in texts]
    stored, history = _read_cache(store, cache, keys, key)
    stored = stored if reuse else set()
    if history.rows < MIN_HISTORY_ROWS:
        history = _history(store, fallback_caches, key)
    pending = [text for text, k in zip(texts, keys) if k not in stored]
    return forecast_stage(name, settings, writer, _price(settings), pending, len(texts), history)


def _seeds(layout: Layout, source: SourceConfig) -> pd.DataFrame:
    """The source's seed table as materialized, else as its files would make it."""
    path = layout.seeds(source.name)
    if path.exists():
        return read_parquet(path, columns=["seed", "shard"])
    return load_seed_table(source).seeds[["seed", "shard"]]


def _shard_label(source: SourceConfig, shards: list[int]) -> str:
    return "" if len(shards) == source.shards else f" (shards {', '.join(map(str, shards))})"


def transcripts_forecast(config: PipelineConfig, layout: Layout, source: SourceConfig, shards: list[int],
                         regenerate: bool = False, texts: list[str] | None = None) -> StageForecast:
    """The source's transcripts of ``shards``; with ``regenerate``, cached conversations are asked again too.
    ``texts``: the seeds, when the caller has them already (a step forecasting itself)."""
    if texts is None:
        seeds = _seeds(layout, source)
        texts = list(seeds.loc[seeds["shard"].isin(shards), "seed"])
    others = [layout.transcript_cache(s.name) for s in config.sources if s.name != source.name]
    return _stage(_store(config, layout), f"{source.name} transcripts{_shard_label(source, shards)}", config.teacher,
                  self_chat_writer(config.teacher), texts, layout.transcript_cache(source.name), others,
                  reuse=not regenerate)


def _placeholder(tokens: int) -> str:
    """An answer of about ``tokens`` tokens whose text is not known yet (a sampled or reference answer)."""
    return "word " * tokens


def _rating_prompts(config: PipelineConfig, layout: Layout, source: SourceConfig, shards: list[int]) -> list[str]:
    """The judge prompts of ``shards``: exact where the corpus shard exists, else with placeholder answers."""
    texts: list[str] = []
    seeds = None  # the seed table, read once for the shards without a corpus
    answer = _placeholder(config.teacher.max_tokens // 2)
    for shard in shards:
        conversations = layout.conversations(source.name, shard)
        if conversations.exists():
            texts += list(judge_filter.rating_requests(read_parquet(conversations))["seed"])
        else:
            seeds = _seeds(layout, source) if seeds is None else seeds
            texts += [rate_conversation_prompt([Turn("human", seed), Turn("ai", answer)])
                      for seed in seeds.loc[seeds["shard"] == shard, "seed"]]
    return texts


def ratings_forecast(config: PipelineConfig, layout: Layout, source: SourceConfig,
                     shards: list[int], texts: list[str] | None = None) -> StageForecast:
    """The judge filter's ratings of ``shards``: the kept conversations where the corpus exists, else every seed
    with an answer as long as half the teacher's ``max_tokens``. ``texts``: the judge prompts, when the caller
    has them already."""
    if texts is None:
        texts = _rating_prompts(config, layout, source, shards)
    writer = judge_writer(RATE_CONVERSATION_FORMAT, config.judge.structured_output)
    others = [layout.conversation_ratings_cache(s.name) for s in config.sources if s.name != source.name]
    return _stage(_store(config, layout), f"{source.name} ratings{_shard_label(source, shards)}",
                  config.judge_teacher(), writer, texts, layout.conversation_ratings_cache(source.name), others)


def _held_out(layout: Layout, plan: SelfDistillationConfig) -> set[str]:
    """v1's held-out seeds, which v2 never samples; none before v1's training set exists."""
    if layout.training_set(plan.adapter).exists() and layout.training_set_duplicates(plan.adapter).exists():
        return self_distill.read_held_out_seed_ids(layout, plan.adapter)
    return set()


def _score_prompts(layout: Layout, plan: SelfDistillationConfig, source: SourceConfig, shard: int,
                   excluded: set[str]) -> list[str]:
    """The judge prompts of one scores shard: exact where its samples exist, else with placeholder answers."""
    sampling = plan.sampling
    samples = layout.feedback_samples(plan.adapter_name, source.name, shard)
    if samples.exists():
        return list(self_distill.judge_requests(read_parquet(samples))["seed"])
    conversations = layout.conversations(source.name, shard)
    if conversations.exists():
        contexts = [c.context for c in self_distill.feedback_contexts(
            read_parquet(conversations), sampling.seeds_per_shard, sampling.seed, excluded)]
    else:
        seeds = _seeds(layout, source)
        contexts = [[Turn("human", seed)] for seed in seeds.loc[seeds["shard"] == shard, "seed"]]
        contexts = contexts[: sampling.seeds_per_shard]
    answer = _placeholder(sampling.max_new_tokens)
    return [score_answer_prompt(context, answer) for context in contexts for _ in range(sampling.answers_per_seed)]


def scores_forecast(config: PipelineConfig, layout: Layout, plan: SelfDistillationConfig, source: SourceConfig,
                    shards: list[int], texts: list[str] | None = None) -> StageForecast:
    """The judge's scores of v2's samples of ``shards``; ``texts``: the judge prompts, when the caller has them."""
    if texts is None:
        excluded = _held_out(layout, plan)
        texts = [text for shard in shards for text in _score_prompts(layout, plan, source, shard, excluded)]
    writer = judge_writer(SCORE_ANSWER_FORMAT, config.judge.structured_output)
    others = [layout.feedback_cache(p.adapter_name) for p in config.self_distillation]
    return _stage(_store(config, layout), f"{plan.adapter_name} scores of {source.name}{_shard_label(source, shards)}",
                  config.judge_teacher(), writer, texts, layout.feedback_cache(plan.adapter_name), others)


def judgment_forecasts(config: PipelineConfig, layout: Layout,
                       adapters: list[str] | None = None) -> list[StageForecast]:
    """The teacher's reference answers (once for every adapter), then each judged adapter's judgments
    (of ``adapters``, every adapter when None)."""
    judge = config.judge
    questions = judge_eval.load_questions(judge.resolved_questions_path(), judge.questions)
    if adapters is None:
        adapters = [a.name for a in config.adapters] + [p.adapter_name for p in config.self_distillation]
    judged = [name for name in adapters if config.is_judged(name)]
    if not judged:
        return []
    stages, store = [], _store(config, layout)
    if judge.reference == "teacher":
        stages.append(_stage(store, "judge: the teacher's reference answers", config.teacher, REFERENCE_WRITER,
                             list(judge_eval.reference_requests(questions)["seed"]), layout.judge_cache()))
    candidate = _placeholder(judge.max_new_tokens)
    reference = _placeholder(config.teacher.max_tokens if judge.reference == "teacher" else judge.max_new_tokens)
    writer = judge_writer(COMPARE_ANSWERS_FORMAT, judge.structured_output)
    for name in judged:
        texts = [compare_answers_prompt(q, *answers) for q in questions
                 for answers in ((candidate, reference), (reference, candidate))]
        stages.append(_stage(store, f"judge: {name}'s judgments", config.judge_teacher(), writer, texts,
                             layout.judge_cache()))
    return stages


def forecast_selection(config: PipelineConfig, layout: Layout, selection: Selection = Selection()) -> list[
        StageForecast]:
    """Every paid stage of ``selection``, priced; raises ForecastError for a stage whose model has no price."""
    sources = [s for s in config.sources if selection.sources is None or s.name in selection.sources]
    stages: list[StageForecast] = []
    if TRANSCRIPTS in selection.stages:
        stages += [transcripts_forecast(config, layout, s, selection.shard_list(s)) for s in sources if s.is_self_chat]
    if RATINGS in selection.stages and config.corpus.judge_filter.enabled:
        stages += [ratings_forecast(config, layout, s, selection.shard_list(s)) for s in sources]
    if SCORES in selection.stages:
        for plan in config.self_distillation:
            for source in (s for s in sources if s.name in config.adapter(plan.adapter).sources):
                stages.append(scores_forecast(config, layout, plan, source, selection.shard_list(source)))
    if JUDGMENTS in selection.stages and config.judge.enabled:
        stages += judgment_forecasts(config, layout)
    return stages
