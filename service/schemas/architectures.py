"""``/v1/architectures``: what a run may name, with its size and the paper's error."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ArchitecturePublic(BaseModel):
    name: str
    family: str = Field(..., description="cifar or imagenet")
    kind: str = Field(..., description="resnet, plain, preact, wide or resnext")
    block: str
    depth: int
    input_shape: list[int]
    num_classes: int = Field(..., description="The head params and flops were counted with")
    params: int | None = Field(None, description="Trainable (shipped with the package)")
    flops: int | None = Field(None, description="Multiply-adds per image (shipped likewise)")
    paper_error: float | None = Field(None, description="%, as the paper reports it")
    paper_error_metric: str | None = None
    paper_top5_error: float | None = None


class ArchitecturesPublic(BaseModel):
    items: list[ArchitecturePublic]
    counted: bool = Field(
        ...,
        description="Whether every entry has its params and flops (they ship with the "
        "package; false only where its counts file is missing)",
    )
