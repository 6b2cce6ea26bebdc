"""One member's job: the body that trains it, its job directory, results record, preemption and costs."""
