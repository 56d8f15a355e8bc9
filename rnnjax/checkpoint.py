"""Orbax checkpoints under `DIR/checkpoints/`, one step directory per save."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp


def _manager(workdir: Path) -> ocp.CheckpointManager:
    return ocp.CheckpointManager((Path(workdir) / "checkpoints").absolute())


def save_final(workdir: Path, state: Any) -> None:
    """Save the final training state's parameters at its step."""
    with _manager(workdir) as mngr:
        mngr.save(int(state.step), args=ocp.args.Composite(params=ocp.args.StandardSave(state.params)))
        mngr.wait_until_finished()


def restore_params(workdir: Path, init: Callable[[jax.Array], Any]) -> Any:
    """Parameters of the latest checkpoint, shaped like `init(key)`'s output."""
    from rnnjax.data import DataError

    with _manager(workdir) as mngr:
        step = mngr.latest_step()
        if step is None:
            raise DataError(f"{workdir}: no checkpoint under {Path(workdir) / 'checkpoints'}")
        target = jax.eval_shape(init, jax.random.key(0))
        restored = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    return restored["params"]
