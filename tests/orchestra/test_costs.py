"""Device-hours from the allocation a job sees: SLURM's environment variables in the formats SLURM writes them
(a real single-node cluster only ever shows the simplest of them, so the multi-node and GPU forms are spelt out here).
"""

from __future__ import annotations

import pytest

from orchestra.jobstate.costs import attempt_costs, local_resources, slurm_resources


@pytest.mark.parametrize(("env", "kind", "count"), [
    ({"SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_CPUS_PER_NODE": "32(x2)"}, "gpu", 8),
    ({"SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_GPUS": "0-1,3"}, "gpu", 3),
    ({"SLURM_JOB_NUM_NODES": "3", "SLURM_JOB_CPUS_PER_NODE": "4(x2),2"}, "cpu", 10),
    ({"SLURM_JOB_NUM_NODES": "1", "SLURM_CPUS_ON_NODE": "6"}, "cpu", 6),
])
def test_slurm_allocation_counts_gpus_first_then_cpus(env, kind, count):
    resources = slurm_resources(env)
    assert (resources["kind"], resources["count"]) == (kind, count)


def test_device_hours_add_up_over_attempts_and_peak_memory_is_the_maximum():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1", "SLURM_GPUS_ON_NODE": "2"}
    first = attempt_costs({}, wall_s=1800, previous={}, env=slurm)
    assert first["device_hours"] == 1.0 and first["resources"]["kind"] == "gpu"
    second = attempt_costs({}, wall_s=900, previous={**first, "peak_memory_mb": 1e9}, env=slurm)
    assert second["device_hours"] == 1.5  # a requeued member's second attempt adds its own 0.25 h x 2 GPUs
    assert second["peak_memory_mb"] == 1e9


def test_local_devices_are_trainer_devices_times_nodes():
    assert local_resources({"accelerator": "cpu", "devices": 2, "num_nodes": 2})["count"] == 4
    assert local_resources({"accelerator": "cpu", "devices": [0, 1, 2], "num_nodes": 1})["count"] == 3
    assert local_resources({"accelerator": "cpu", "devices": "auto"})["count"] == 1
