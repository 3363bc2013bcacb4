"""Settings of Baize v2: self-distillation with feedback, and the LLM-as-judge evaluation.

Part of the one configuration model (re-exported by ``config``): a ``self_distillation``
entry names the adapter it improves; its new adapter is trained like any other. ``judge``
says how every adapter's evaluation is judged by the teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, JsonValue, field_validator

from .base import PROJECT_ROOT, StrictModel, Text
from .teacher import ReasoningEffort, check_extra_body

SAMPLE_JUDGE_QUESTIONS = "data/judge/questions.txt"
TEACHER_REFERENCE = "teacher"


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SamplingEndpointConfig(StrictModel):
    """An OpenAI-compatible server that samples v1's answers instead of the step's own model: vLLM serving v1
    with ``--enable-lora``, or ``baize serve``. Asked through the collector (retries, cache, processes)."""

    base_url_env: str = Field(pattern=ENV_NAME, description="the variable holding the server's base URL")
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME, description="the variable holding its key")
    model: Text = Field(description="the name the server serves v1 under (vLLM: the --lora-modules name)")
    max_concurrency: int = Field(default=16, ge=1, le=1024)
    processes: int = Field(default=1, ge=1, le=64)
    timeout_s: float = Field(default=120.0, gt=0)


class SamplingConfig(StrictModel):
    """How the trained adapter answers each feedback context (the paper: 4 answers, temperature 1, top-p 0.95)."""

    answers_per_seed: int = Field(default=4, ge=2)
    seeds_per_shard: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_new_tokens: int = Field(default=256, ge=1)
    batch_size: int = Field(default=16, ge=1)
    seed: int = 0
    # None: the step samples with v1 on its own device (the gpu pool); set: a serving endpoint does.
    endpoint: SamplingEndpointConfig | None = None


class PreferenceConfig(StrictModel):
    """DPO on each seed's best- and worst-scored answers (``objective: dpo``), with v1 as the reference policy.

    v2 starts from v1's LoRA weights and is pulled towards the better answer of each pair
    and away from the worse, ``beta`` saying how far from v1 it may go (the DPO paper's 0.1).
    Batch sizes, cutoff, warmup, seed and precision are v1's training settings; a pair is
    two sequences per micro-batch slot, and each forward also runs the reference.
    """

    beta: float = Field(default=0.1, gt=0, description="the KL penalty: smaller lets v2 move further from v1")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        default="sigmoid", description="sigmoid: the DPO paper's loss; ipo and hinge: its bounded variants"
    )
    learning_rate: float = Field(default=5e-5, gt=0, description="lower than SFT's: DPO overshoots quickly")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="caps the optimizer steps the epochs give")


class SelfDistillationConfig(StrictModel):
    """One v2 adapter: ``adapter`` (v1) answers its sources' seeds, the teacher scores, v2 learns from the scores."""

    adapter: Text = Field(description="the v1 adapter whose answers are sampled and which v2 starts from")
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    sampling: SamplingConfig = SamplingConfig()
    objective: Literal["sft", "dpo"] = Field(
        default="sft",
        description="sft: train on the best-scored answer per seed; dpo: prefer the best over the worst (needs trl)",
    )
    dpo: PreferenceConfig = PreferenceConfig()
    judge_check: Literal["warn", "block"] = Field(
        default="warn",
        description="when the judge rates v2 below v1: a warning, or a failed check that blocks what depends on v2",
    )

    @property
    def adapter_name(self) -> str:
        return self.name or f"{self.adapter}_v2"


class JudgeConfig(StrictModel):
    """The judge: who scores Baize v2's sampled answers and every adapter's judged evaluation, and how.

    The model and its sampling are the judge's own (by default the teacher's model at
    temperature 0, where the model takes a temperature); limits, retries, budget, prices and
    the API come from the teacher's settings. In the judged evaluation (the paper's protocol,
    see ``judge_eval``) the adapter and the reference answer the same questions, and the
    judge scores both answers in one prompt, in both orders.
    """

    model: Text | None = Field(default=None, description="the judge's model; None: the teacher's")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0,
                               description="sent where the model takes one (reasoning models take only their own)")
    max_tokens: int = Field(default=1024, ge=1, description="a judgment's completion budget, reasoning included")
    reasoning_effort: ReasoningEffort | None = None
    extra_body: dict[Text, JsonValue] = Field(default_factory=dict, description="provider fields sent as they are")
    base_url_env: str | None = Field(default=None, pattern=ENV_NAME,
                                     description="the variable holding the judge's endpoint; None: OPENAI_BASE_URL")
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME,
                                    description="the variable holding the judge's key; None: OPENAI_API_KEY")
    structured_output: bool = Field(
        default=True, description="ask for the scores as JSON (response_format), as text where the endpoint refuses"
    )
    max_unscored_fraction: float = Field(
        default=0.5, ge=0.0, le=1.0, description="a step whose share of judgments without a score is larger fails"
    )
    enabled: bool = True
    questions_path: Text = Field(
        default=SAMPLE_JUDGE_QUESTIONS,
        description="one question per line (# comments) or JSONL with a 'question' field; relative to the project",
    )
    questions: int | None = Field(default=None, ge=1, description="judge only the file's first N questions")
    reference: Text = Field(
        default=TEACHER_REFERENCE,
        description="whose answers the adapter's are compared with: 'teacher' (its own answers) or an adapter name",
    )
    max_new_tokens: int = Field(default=128, ge=1, description="length limit of the adapters' answers")
    batch_size: int = Field(default=16, ge=1, description="answers generated per forward pass")

    @field_validator("extra_body")
    @classmethod
    def _no_pipeline_fields_in_extra_body(cls, extra_body: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return check_extra_body(extra_body)

    def resolved_questions_path(self, root: Path = PROJECT_ROOT) -> Path:
        path = Path(self.questions_path)
        return path if path.is_absolute() else root / path
