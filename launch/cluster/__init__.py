"""A real single-node development SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) for one machine.

    from launch.cluster import DevCluster
    cluster = DevCluster("/tmp/orchestra-slurm")
    cluster.up()            # idempotent
    os.environ.update(cluster.env())   # SLURM_CONF for sbatch / submitit
    cluster.down()          # idempotent

Command line: `python -m launch.cluster up|down|status [--dir DIR]`. Packages: `bash launch/cluster/install.sh`.
"""

from launch.cluster.config import PARTITION
from launch.cluster.dev_cluster import DevCluster
from launch.cluster.errors import ClusterError
from launch.cluster.layout import DEFAULT_STATE_DIR

__all__ = ["DEFAULT_STATE_DIR", "PARTITION", "ClusterError", "DevCluster"]
