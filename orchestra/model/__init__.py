"""The Lightning ``Module`` that binds a forward function, backbones, optimizers and batch-norm variants."""
