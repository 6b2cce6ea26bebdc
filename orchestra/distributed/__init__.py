"""How ranks share a job: Lightning strategies (DDP, FSDP, DeepSpeed) and the ranks' signal vote."""
