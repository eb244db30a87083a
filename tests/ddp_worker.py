"""`python -m minitx` for tests/test_distributed.py, started by torchrun, with test-only hooks.

MINITX_TEST_PARAMS_DIR=DIR   after training, each rank saves its parameters to DIR/rank<R>.pt
MINITX_TEST_FAIL_RANK=R      rank R raises RuntimeError("injected failure") at its second step
MINITX_TEST_SIGNAL_RANK=R    rank R sends itself SIGTERM during its third step
"""

import os
import signal
from pathlib import Path

import torch

import minitx.api as api
from minitx.cli import main
from minitx.tasks import Translation
from minitx.training.trainer import Trainer

rank = int(os.environ["RANK"])
models = []
build_model = Translation.build_model


def capture_model(self, *args, **kwargs):
    model = build_model(self, *args, **kwargs)
    models.append(model)
    return model


Translation.build_model = capture_model

train_step, calls = Trainer.step, []


def hooked_train_step(self, *args, **kwargs):
    calls.append(1)
    if os.environ.get("MINITX_TEST_FAIL_RANK") == str(rank) and len(calls) == 2:
        raise RuntimeError("injected failure")
    if os.environ.get("MINITX_TEST_SIGNAL_RANK") == str(rank) and len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return train_step(self, *args, **kwargs)


Trainer.step = hooked_train_step

train_group = api.train_group


def hooked_train_group(*args, **kwargs):
    """Save this rank's parameters once training succeeded (ranks other than 0 then leave with
    os._exit, past any code after main())."""
    result = train_group(*args, **kwargs)
    params_dir = os.environ.get("MINITX_TEST_PARAMS_DIR")
    if params_dir:
        torch.save(models[0].state_dict(), Path(params_dir) / f"rank{rank}.pt")
    return result


api.train_group = hooked_train_group

main()
