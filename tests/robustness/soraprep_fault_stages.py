"""Test-only stages that misbehave on purpose, for tests/robustness/test_process_faults.py.

A uniquely named top-level module (not ``tests.…``: a dependency installs its own top-level ``tests``
package). The tests put this folder on PYTHONPATH and run the CLI as
``python -c "import soraprep_fault_stages; from soraprep.cli import main; main()" curate …``; the runners
import a recipe's stage modules in every worker (see runners/supervisor.stage_modules), so the stage is
registered there too, also in Ray workers.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from soraprep.stages import Resources, Row, register


@register("fault")
@dataclass
class FaultStage:
    """``actions`` maps a substring of a row's source to what to do on that row:

    - ``alloc``: allocate and touch memory, 32 MiB at a time, up to ``alloc_cap_mib`` (then go on normally,
      so a missing memory bound shows up as a wrong row, not as a machine out of memory);
    - ``die``: kill this worker process with SIGKILL (what the OS out-of-memory killer does);
    - ``die_once``: the same, only the first time (a marker file ``<marker_dir>/<substring>`` remembers it);
    - ``hang``: sleep ``hang_s`` (a decoder stuck forever), after writing ``<marker_dir>/hang-pid-<pid>``;
    - ``hang_once``: the same, unless a ``hang-pid-*`` marker exists already;
    - ``kill_parent``: SIGKILL the worker's parent, the Ray actor that supervises it (Ray tests only).
    """

    actions: dict = field(default_factory=dict)
    marker_dir: str = ""
    alloc_cap_mib: int = 1536
    hang_s: float = 600.0
    name = "fault"
    phase = "score"  # runs right after `score`, before the filter and the cut
    resources = Resources(cpus=0.1)
    batch_size = 1

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[Row]) -> list[Row]:
        for row in batch:
            for needle, action in self.actions.items():
                if needle in str(row.get("source")):
                    self._do(action, needle)
        return batch

    def _do(self, action: str, needle: str) -> None:
        if action == "alloc":
            import numpy as np

            hog = []
            for _ in range(self.alloc_cap_mib // 32):
                hog.append(np.ones(32 * 1024 * 1024, dtype=np.uint8))  # touched: resident, not just reserved
        elif action == "die" or (action == "die_once" and not (Path(self.marker_dir) / needle).exists()):
            if action == "die_once":
                (Path(self.marker_dir) / needle).write_text("died once")
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "kill_parent":  # the process that supervises this worker (a Ray actor): never locally
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(60)
        elif action == "hang" or (action == "hang_once" and not list(Path(self.marker_dir).glob("hang-pid-*"))):
            if self.marker_dir:  # the test checks that this process dies with a killed run
                (Path(self.marker_dir) / f"hang-pid-{os.getpid()}").write_text("")
            time.sleep(self.hang_s)
