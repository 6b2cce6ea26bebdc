"""Getting jobs onto machines: the sweep manifest and launchers. Knows nothing of SSL or of the training code."""
