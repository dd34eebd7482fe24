"""Three workers, one killed with SIGKILL and restarted twice mid-stream (bench.crash, small).

Regression test for a fault bench.crash found: the rebalance that follows a kill crashed a
*healthy* worker (Faust's table recovery raised ConsistencyError, faust-streaming/faust#158)
and its partitions' windows were never emitted (without the fix this test fails: one worker
crash logged). Checked here: no worker service crashes and all three workers run at the end.
(Exact counts across a kill are not guaranteed yet, windows can even go missing with the
killed worker's state: see README, Reliability, for the measured figures.)
"""

from __future__ import annotations

import argparse
import asyncio

from bench.crash import run


def test_a_kill_and_the_rebalance_after_it_take_down_no_other_worker(tmp_path):
    # bench.crash --workers 3 as it is (the configuration that met the fault twice)
    args = argparse.Namespace(events=200_000, models=10, events_per_second=2000.0,
                              rate=20_000.0, kills=3, workers=3, seed=1)
    result = asyncio.run(run(args, tmp_path))
    assert result["worker_crash_logs"] == 0, result
    assert result["workers_alive_at_end"] == 3, result
    assert result["windows_not_in_truth"] == 0, result
