"""Settings of Baize v2: self-distillation with feedback from a trained adapter.

Part of the one configuration model (re-exported by ``config``): a ``self_distillation``
entry names the adapter it improves; its new adapter is trained like any other.
"""

from __future__ import annotations

from pydantic import Field

from .config_base import StrictModel, Text


class SamplingConfig(StrictModel):
    """How the trained adapter answers each feedback context (the paper: 4 answers, temperature 1, top-p 0.95)."""

    answers_per_seed: int = Field(default=4, ge=2)
    seeds_per_shard: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_new_tokens: int = Field(default=256, ge=1)
    batch_size: int = Field(default=16, ge=1)
    seed: int = 0


class SelfDistillationConfig(StrictModel):
    """One v2 adapter: ``adapter`` (v1) answers its sources' seeds, the teacher scores, v2 learns the best."""

    adapter: Text = Field(description="the v1 adapter whose answers are sampled and which v2 starts from")
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    sampling: SamplingConfig = SamplingConfig()

    @property
    def adapter_name(self) -> str:
        return self.name or f"{self.adapter}_v2"
