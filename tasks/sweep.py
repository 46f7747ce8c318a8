"""`batchline.sweep`: the periodic pass that re-arms quiet batches (run by celery beat)."""

from __future__ import annotations

from batchline.messaging.names import TaskName
from batchline.pipeline import sweep as sweeper
from tasks.base import PipelineTask
from workers.app import app


@app.task(name=TaskName.SWEEP.value, base=PipelineTask, bind=True)
def sweep(self: PipelineTask) -> dict[str, int]:
    return dict(self.step(sweeper.sweep))
