"""The Mask: parameter name -> boolean tensor (True = kept), with the group of each tensor.

Density is always counted from the mask, never from weights that happen to be zero. A mask
saves as safetensors whose tensor names are the model's parameter names (the groups go in the
file's metadata), so it applies to any model with those names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ticketlab.errors import DamagedFile, TicketlabError
from ticketlab.io import load_tensors, save_tensors
from ticketlab.models.base import prunable_groups


class Mask(Mapping[str, torch.Tensor]):
    def __init__(self, tensors: Mapping[str, torch.Tensor], groups: Mapping[str, str]):
        if set(tensors) != set(groups):
            raise ValueError("every mask tensor needs a group")
        # contiguous whatever the parameters' layout (a channels-last conv weight makes a
        # channels-last ones_like): pruning indexes masks through flat views
        self._tensors = {k: v.to(torch.bool).contiguous() for k, v in tensors.items()}
        self.groups = dict(groups)

    # ------------------------------------------------------------------ construction

    @classmethod
    def dense(cls, model: torch.nn.Module) -> Mask:
        """Keeps every prunable weight of `model` (see `prunable_groups`)."""
        params = dict(model.named_parameters())
        groups = prunable_groups(model)
        missing = [n for n in groups if n not in params]
        if missing:
            raise TicketlabError(f"prunable_groups() names unknown parameters: {missing}")
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in groups}, groups)

    def with_tensors(self, tensors: Mapping[str, torch.Tensor]) -> Mask:
        return Mask(tensors, {k: self.groups[k] for k in tensors})

    # ------------------------------------------------------------------ mapping

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask) or set(self) != set(other):
            return False
        return self.groups == other.groups and all(
            torch.equal(self[k].cpu(), other[k].cpu()) for k in self
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, density {self.density():.4f})"

    def to(self, device: torch.device | str) -> Mask:
        return self.with_tensors({k: v.to(device) for k, v in self.items()})

    # ------------------------------------------------------------------ counting

    def counts(self) -> dict[str, tuple[int, int]]:
        """Name -> (kept, total)."""
        return {k: (int(v.sum()), v.numel()) for k, v in self.items()}

    def density(self) -> float:
        """Fraction of prunable weights kept."""
        kept, total = map(sum, zip(*self.counts().values(), strict=True))
        return kept / total

    def density_by_tensor(self) -> dict[str, float]:
        return {k: kept / total for k, (kept, total) in self.counts().items()}

    def density_by_group(self) -> dict[str, float]:
        sums: dict[str, list[int]] = {}
        for k, (kept, total) in self.counts().items():
            s = sums.setdefault(self.groups[k], [0, 0])
            s[0] += kept
            s[1] += total
        return {g: kept / total for g, (kept, total) in sums.items()}

    def model_density(self, model: torch.nn.Module) -> float:
        """Fraction of *all* parameters kept, biases and unprunable tensors included."""
        total = kept = 0
        for name, p in model.named_parameters():
            total += p.numel()
            kept += int(self[name].sum()) if name in self else p.numel()
        return kept / total

    # ------------------------------------------------------------------ models

    def check_fits(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, m in self.items():
            if name not in params:
                raise TicketlabError(
                    f"the mask names '{name}', which {type(model).__name__} does not have: "
                    "use a mask made for this architecture"
                )
            if params[name].shape != m.shape:
                raise TicketlabError(
                    f"mask '{name}' has shape {tuple(m.shape)} but the parameter has "
                    f"{tuple(params[name].shape)}: use a mask made for this architecture"
                )

    @torch.no_grad()
    def apply_(self, model: torch.nn.Module) -> torch.nn.Module:
        """Zeroes the pruned weights of `model` in place."""
        self.check_fits(model)
        params = dict(model.named_parameters())
        for name, m in self.items():
            params[name].mul_(m.to(params[name].device))
        return model

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> str:
        """Writes the mask (tagged kind=mask, with its checksum); returns the checksum."""
        meta = {"format": "ticketlab.mask", "groups": json.dumps(self.groups)}
        return save_tensors(Path(path), dict(self.items()), "mask", meta)

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        path = Path(path)
        if not path.is_file():
            raise TicketlabError(f"mask file {path} not found: check the path")
        tensors, meta = load_tensors(path, "mask")
        try:
            groups = json.loads(meta["groups"]) if "groups" in meta else {k: "fc" for k in tensors}
            return cls(tensors, groups)
        except (ValueError, TypeError) as e:
            raise DamagedFile(path, f"bad groups metadata: {e}") from None
