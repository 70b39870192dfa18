"""SIGReg: the sliced Epps-Pulley test statistic that pulls embeddings towards an isotropic Gaussian.

For N embeddings z_n (D-dim) and a unit direction a, project x_n = <z_n, a> and compare the
empirical characteristic function phi_N(t) = mean_n exp(i t x_n) with the standard normal's
exp(-t^2/2):

    EP(a) = N * integral |phi_N(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt

by the trapezoid rule on `knots` points over [-t_max, t_max]; SIGReg is the mean over directions.
It is ~O(1) for Gaussian samples and grows like N for a distribution that differs from it.

Under data parallelism phi_N is averaged over ranks (its sums are all-reduced, with gradients) and
N is the global batch, so every rank computes the statistic of the global batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def random_directions(dim: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(dim, n) Gaussian directions normalised to unit columns, drawn on the CPU from `generator`
    (seed it identically on every rank so all ranks project onto the same directions)."""
    a = torch.randn(dim, n, generator=generator)
    return a / a.norm(dim=0, keepdim=True)


def _data_parallel() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def epps_pulley(proj: torch.Tensor, knots: int = 17, t_max: float = 5.0,
                sync_ranks: bool = True) -> torch.Tensor:
    """Per-direction Epps-Pulley statistics (M,) of projected samples proj (N, M), in float32
    (float64 stays float64).

    With `sync_ranks` and an initialised process group of several ranks, proj holds this rank's
    share of the global batch and the result is the statistic of the global batch."""
    if proj.dim() != 2 or proj.shape[0] == 0:
        raise ValueError(f"projections must be (N, M) with N > 0, got {tuple(proj.shape)}")
    if knots < 2 or t_max <= 0:
        raise ValueError(f"need knots >= 2 and t_max > 0, got knots={knots}, t_max={t_max}")
    dtype = torch.promote_types(proj.dtype, torch.float32)
    t = torch.linspace(-t_max, t_max, knots, device=proj.device, dtype=dtype)
    xt = proj.to(dtype).unsqueeze(-1) * t                                 # (N, M, K)
    sums = torch.stack([xt.cos().sum(0), xt.sin().sum(0)])             # (2, M, K)
    n = torch.tensor(float(proj.shape[0]), device=proj.device, dtype=dtype)
    if sync_ranks and _data_parallel():
        # The autograd-aware all-reduce sends each rank the gradient of the global statistic.
        from torch.distributed.nn.functional import all_reduce
        sums = all_reduce(sums, op=dist.ReduceOp.SUM)
        dist.all_reduce(n, op=dist.ReduceOp.SUM)
    real, imag = sums / n
    gauss = torch.exp(-0.5 * t.square())
    integrand = ((real - gauss).square() + imag.square()) * gauss     # |phi_N - phi|^2 w(t)
    return n * torch.trapezoid(integrand, t, dim=-1)


def sigreg(z: torch.Tensor, directions: torch.Tensor, knots: int = 17, t_max: float = 5.0,
           sync_ranks: bool = True) -> torch.Tensor:
    """SIGReg of embeddings z (N, D) along directions (D, M): mean Epps-Pulley statistic."""
    if z.dim() != 2 or z.shape[1] != directions.shape[0]:
        raise ValueError(f"embeddings {tuple(z.shape)} do not match directions {tuple(directions.shape)}")
    dtype = torch.promote_types(z.dtype, torch.float32)
    return epps_pulley(z.to(dtype) @ directions.to(z.device, dtype), knots, t_max, sync_ranks).mean()
