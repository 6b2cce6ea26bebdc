"""launch.submitit_compat still reaches submitit's private API; if it moved, one line names the installed submitit."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from launch import submitit_compat

_INSTALLED = f"submitit {version('submitit')} (tested {submitit_compat.TESTED}.x)"


def test_array_sbatch_script_is_submitits_own(tmp_path):
    import submitit

    executor = submitit.SlurmExecutor(folder=tmp_path / "%j")
    try:
        executor.update_parameters(time=7, partition="compat-probe", array_parallelism=2)
        script = submitit_compat.array_sbatch_script(executor, 3)
    except (ImportError, AttributeError, TypeError) as err:
        raise pytest.fail.Exception(f"{_INSTALLED}: submitit.slurm.slurm._make_sbatch_string or SlurmExecutor."
                                    f"_submitit_command_str moved ({type(err).__name__}: {err}); update "
                                    f"launch/submitit_compat.py", pytrace=False) from None
    expected = ["#SBATCH --array=0-2%2", "#SBATCH --partition=compat-probe", "#SBATCH --time=7",
                "submitit.core._submit"]
    missing = [line for line in expected if line not in script]
    if missing:
        pytest.fail(f"{_INSTALLED}: the sbatch script no longer has {missing}; update launch/submitit_compat.py",
                    pytrace=False)
