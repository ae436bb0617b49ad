"""The torch output kinds: ``torch`` (weights for a clean graph or a generic module) and
``torch-source`` (the generic module's readable ``model.py`` plus weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from porter.targets import Job, Target, register_target


def _prepare(job: Job):
    """Nothing to build: the module was verified by the pipeline; write weights + source."""

    def write(stage: Path) -> dict[str, Any]:
        from porter.pipeline import write_weights

        return {"weights": write_weights(stage, job.module, job.manifest, job.files)}

    return write


register_target(Target("torch", "weights for a clean graph (or a generic module) + manifest",
                       _prepare, flavours=(None, "cpu", "npu")))
register_target(Target("torch-source", "a generated, readable model.py plus weights", _prepare,
                       flavours=(None, "cpu", "npu"), graph="generic"))
