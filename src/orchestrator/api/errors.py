"""The body of every error answer, `{"detail": "..."}` (as FastAPI's HTTPException writes it):
one schema for the experiments' and the grading endpoints' OpenAPI documentation."""
from __future__ import annotations

from pydantic import BaseModel


class Detail(BaseModel):
    detail: str
