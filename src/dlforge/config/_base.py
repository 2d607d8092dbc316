"""The base every section of the run schema derives from: strict, validated on assignment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["_Strict"]


class _Strict(BaseModel):
    # Unknown keys are errors; assignments are validated too (set_params goes through them).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
