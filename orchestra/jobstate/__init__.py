"""A job's state on disk and through its life: the job directory, the results record, checkpoints, the
validation history, preemption and costs. The body that ties them to training is ``orchestra.job``."""
