"""Request and response bodies per resource, split by direction: ``XCreate`` in,
``XPublic``/``XsPublic`` out.

The ORM rows (:mod:`jobs.records.models`) never leave the service as they are; responses are
built from them with ``model_validate(row)``. Import from here or from the resource's module.
"""

from __future__ import annotations

from service.schemas.architectures import ArchitecturePublic, ArchitecturesPublic
from service.schemas.datasets import (
    DATASET_NAME,
    DatasetCreate,
    DatasetPublic,
    DatasetsPublic,
    check_dataset_name,
)
from service.schemas.evaluations import (
    BatchPredictionCreate,
    EvaluationCreate,
    EvaluationPublic,
    EvaluationsPublic,
)
from service.schemas.experiments import (
    CellPublic,
    ExperimentCreate,
    ExperimentPublic,
    ExperimentsPublic,
    ExperimentSummary,
    RandomSearch,
)
from service.schemas.health import HealthPublic, ReadyPublic
from service.schemas.runs import (
    EpochPublic,
    EpochsPublic,
    RunCreate,
    RunProgress,
    RunPublic,
    RunsPublic,
)

__all__ = [
    "DATASET_NAME",
    "ArchitecturePublic",
    "ArchitecturesPublic",
    "BatchPredictionCreate",
    "CellPublic",
    "DatasetCreate",
    "DatasetPublic",
    "DatasetsPublic",
    "EpochPublic",
    "EpochsPublic",
    "EvaluationCreate",
    "EvaluationPublic",
    "EvaluationsPublic",
    "ExperimentCreate",
    "ExperimentPublic",
    "ExperimentSummary",
    "ExperimentsPublic",
    "HealthPublic",
    "RandomSearch",
    "ReadyPublic",
    "RunCreate",
    "RunProgress",
    "RunPublic",
    "RunsPublic",
    "check_dataset_name",
]
