"""Reading forward outputs by key, with an error that lists what the forward did return."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from orchestra.errors import UserError


def read_output(outputs: Mapping[str, object], key: str, reader: str) -> torch.Tensor:
    if key not in outputs:
        keys = ", ".join(sorted(outputs)) or "none"
        raise UserError(f"{reader} reads output '{key}' but the forward returned only: {keys}; "
                        f"set its input/target to one of those")
    return outputs[key]
