"""`batchline.recover`: the periodic pass that hands a dead worker's messages to live ones."""

from __future__ import annotations

from functools import partial

from batchline import recovery
from batchline.messaging.names import TaskName
from batchline.messaging.queues import Queue
from tasks.base import PipelineTask
from workers.app import app
from workers.restore import broker_redis, restore
from workers.runtime import context


@app.task(name=TaskName.RECOVER.value, base=PipelineTask, bind=True)
def recover(self: PipelineTask) -> dict[str, int]:
    broker = broker_redis(context().settings)
    queues = [q.value for q in Queue]
    return dict(self.step(recovery.recover, broker, partial(restore, app), queues))
