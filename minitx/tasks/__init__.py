"""Tasks as plugins: each registered Task (minitx/tasks/base.py) owns everything that differs
between what runs learn. A new task is one module with a Task subclass and one `register_task`.

    from minitx.tasks import Translation, register_task

    class ReverseWords(Translation):
        name = "reverse_words"
        metrics = ("exact_match", "loss")
        ...

    register_task(ReverseWords())   # then `task: reverse_words` in a config
"""

from __future__ import annotations

import dataclasses

from minitx.config import Config
from minitx.errors import UserError
from minitx.tasks.base import Task
from minitx.tasks.classification import Classification
from minitx.tasks.translation import Translation

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` available as `task: <task.name>` in configs (a later one replaces an earlier)."""
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise UserError(f"task: '{name}' is not a task; use one of {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def configured(cfg: Config) -> Config:
    """`cfg` checked against its task, with the task's best-checkpoint metric filled in when the
    config leaves it unset (so config.yaml shows it); raises UserError naming every problem."""
    task = get_task(cfg.task)
    errors = task.config_errors(cfg)
    metric = cfg.train.early_stopping_metric
    if metric is not None and metric not in task.metrics:
        errors.append(
            f"train.early_stopping_metric: {metric} is not a {task.name} metric; use one of "
            f"{', '.join(task.metrics)}"
        )
    if errors:
        raise UserError(f"config: {len(errors)} problem(s): {'; '.join(errors)}")
    if metric is None:
        train = dataclasses.replace(cfg.train, early_stopping_metric=task.metrics[0])
        cfg = dataclasses.replace(cfg, train=train)
    return cfg


register_task(Translation())
register_task(Classification())

__all__ = ["Classification", "Task", "Translation", "configured", "get_task", "register_task"]
