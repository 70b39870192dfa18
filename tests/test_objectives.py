"""Pre-training objectives against independent references (NumPy loops, scipy quad, closed forms)."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from lumamba.config import CONFIGS
from lumamba.model import LuMamba
from lumamba.objectives import (ObjectiveConfig, PretrainObjective, crop_views, embed_views, epps_pulley,
                                expand_patch_mask, lejepa_loss, masked_cell_count, masked_reconstruction_loss,
                                query_specialisation_loss, random_directions, random_patch_mask,
                                sample_crop_starts, sigreg)

NAMES = ["FP1-F7", "F7-T3", "T3-T5", "T5-O1"]
# Small views so a 320-sample (8-patch) window holds them; the defaults (16/4 patches) need 5 s windows.
SMALL_VIEWS = dict(global_patches=4, local_patches=2, sigreg_directions=16)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


# ---- masking -------------------------------------------------------------------------------

@pytest.mark.parametrize("C,S,ratio", [(22, 32, 0.6), (22, 32, 0.5), (4, 8, 0.6), (3, 5, 0.1), (2, 2, 1.0), (5, 7, 0.0)])
def test_mask_hides_exactly_the_requested_fraction(C, S, ratio):
    g = torch.Generator().manual_seed(1)
    mask = random_patch_mask(64, C, S, ratio, g)
    expected = math.floor(ratio * C * S + 0.5)
    assert mask.shape == (64, C, S) and mask.dtype == torch.bool
    assert (mask.sum(dim=(1, 2)) == expected).all()
    assert masked_cell_count(C, S, ratio) == expected
    if 0 < expected < C * S:
        assert len({tuple(m.flatten().tolist()) for m in mask}) > 1, "samples must get different masks"


def test_mask_covers_cells_uniformly_and_expands_to_samples():
    mask = random_patch_mask(4000, 4, 8, 0.6, torch.Generator().manual_seed(2))
    # Each cell is hidden with probability 19/32 = 0.594; 4000 draws give a std of 0.008 per cell.
    freq = mask.float().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 19 / 32), atol=0.04)
    full = expand_patch_mask(mask[:2], 40)
    assert full.shape == (2, 4, 320)
    assert torch.equal(full.view(2, 4, 8, 40).all(-1), mask[:2]) and torch.equal(full.view(2, 4, 8, 40).any(-1), mask[:2])


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_mask_ratio_out_of_range_is_rejected(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        random_patch_mask(2, 4, 8, ratio)


# ---- reconstruction and query specialisation ----------------------------------------------

def _smooth_l1(d, beta=1.0):
    d = abs(d)
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def test_reconstruction_loss_matches_a_loop_over_cells():
    g = torch.Generator().manual_seed(3)
    B, C, S, P = 2, 3, 4, 5
    rec, target = torch.randn(B, C, S * P, generator=g) * 2, torch.randn(B, C, S * P, generator=g)
    mask = random_patch_mask(B, C, S, 0.5, g)
    hid, vis = [], []
    for b in range(B):
        for c in range(C):
            for s in range(S):
                errs = [_smooth_l1(float(rec[b, c, s * P + i] - target[b, c, s * P + i])) for i in range(P)]
                (hid if mask[b, c, s] else vis).extend(errs)
    out = masked_reconstruction_loss(rec, target, mask, visible_weight=0.05)
    assert out.masked.item() == pytest.approx(np.mean(hid), rel=1e-6)
    assert out.visible.item() == pytest.approx(np.mean(vis), rel=1e-6)
    assert out.total.item() == pytest.approx(np.mean(hid) + 0.05 * np.mean(vis), rel=1e-6)


def test_reconstruction_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        masked_reconstruction_loss(torch.zeros(1, 2, 40), torch.zeros(1, 2, 80), torch.zeros(1, 2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="patch_mask"):
        masked_reconstruction_loss(torch.zeros(1, 2, 40), torch.zeros(1, 2, 40), torch.zeros(1, 3, 1, dtype=torch.bool))


def test_query_specialisation_matches_explicit_sums():
    attn = torch.softmax(torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(4)), dim=-1)
    a = attn.reshape(-1, 4, 6).double().numpy()
    total = 0.0
    for n in range(a.shape[0]):
        for i in range(4):
            for j in range(4):
                if i != j:
                    total += float(np.dot(a[n, i], a[n, j])) ** 2
    expected = 0.8 * total / (a.shape[0] * 4 * 4)      # mean over all Q*Q entries, diagonal zeroed
    assert query_specialisation_loss(attn).item() == pytest.approx(expected, rel=1e-6)
    # Queries attending to disjoint channels are fully specialised: zero loss.
    onehot = torch.eye(6)[:4].expand(5, 4, 6)
    assert query_specialisation_loss(onehot).item() == 0.0


# ---- SIGReg ---------------------------------------------------------------------------------

def test_sigreg_small_for_gaussian_large_for_collapsed_or_non_gaussian():
    g = torch.Generator().manual_seed(5)
    N, D = 2000, 16
    dirs = random_directions(D, 64, g)
    assert torch.allclose(dirs.norm(dim=0), torch.ones(64), atol=1e-6)
    # Under the null N * integral has mean sqrt(2 pi) - sqrt(2 pi / 3) = 1.059 (any N): the
    # average over 64 directions lands well inside [0.5, 2].
    gauss = sigreg(torch.randn(N, D, generator=g), dirs).item()
    assert 0.5 < gauss < 2.0
    collapsed = sigreg(torch.full((N, D), 0.3), dirs).item()
    bimodal = torch.randn(N, D, generator=g) * 0.3
    bimodal[:, 0] += torch.where(torch.rand(N, generator=g) < 0.5, -2.0, 2.0)
    too_wide = 3 * torch.randn(N, D, generator=g)
    for name, value in [("collapsed", collapsed), ("bimodal", sigreg(bimodal, dirs).item()),
                        ("scaled", sigreg(too_wide, dirs).item())]:
        assert value > 100 * gauss, f"{name}: {value} vs gaussian {gauss}"


def _integrand(x):
    return lambda t: ((np.cos(t * x).mean() - np.exp(-t * t / 2)) ** 2 + np.sin(t * x).mean() ** 2) * np.exp(-t * t / 2)


def test_epps_pulley_matches_quad_and_the_closed_form():
    x = np.random.default_rng(1).standard_normal(50) * 1.3 + 0.2
    N = len(x)
    value, err = quad(_integrand(x), -5, 5, limit=200, epsabs=1e-13, epsrel=1e-12)
    reference = N * value
    # Closed form over the whole real line (Gaussian integrals of the expanded square); the tails
    # beyond |t| = 5 weigh less than exp(-12.5), so it agrees with quad on [-5, 5] to 1e-6.
    d = x[:, None] - x[None, :]
    closed = N * (math.sqrt(2 * math.pi) * np.exp(-d * d / 2).mean()
                  - 2 * math.sqrt(math.pi) * np.exp(-x * x / 4).mean() + math.sqrt(2 * math.pi / 3))
    assert closed == pytest.approx(reference, rel=1e-6)
    proj = torch.tensor(x)[:, None]
    # Same 17 knots as the implementation: exact up to float64 rounding.
    t = np.linspace(-5, 5, 17)
    assert epps_pulley(proj).item() == pytest.approx(N * np.trapezoid([_integrand(x)(s) for s in t], t), rel=1e-12)
    # The trapezoid rule converges to the integral; with 17 knots it is already within 1e-3
    # (6e-5 on these data: the integrand is smooth and decays like exp(-t^2/2)).
    assert epps_pulley(proj, knots=401).item() == pytest.approx(reference, rel=1e-9)
    assert epps_pulley(proj).item() == pytest.approx(reference, rel=1e-3)
    # float32 path (the training one) agrees with float64 to single precision.
    assert epps_pulley(proj.float()).item() == pytest.approx(epps_pulley(proj).item(), rel=1e-5)


def test_sigreg_averages_directions_and_rejects_bad_shapes():
    g = torch.Generator().manual_seed(6)
    z, dirs = torch.randn(100, 8, generator=g, dtype=torch.float64), random_directions(8, 5, g).double()
    per_direction = torch.stack([epps_pulley(z @ dirs[:, [m]])[0] for m in range(5)])
    assert sigreg(z, dirs).item() == pytest.approx(per_direction.mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="do not match"):
        sigreg(torch.zeros(4, 7), dirs)
    with pytest.raises(ValueError, match="N > 0"):
        epps_pulley(torch.zeros(0, 3))


# ---- LeJEPA ---------------------------------------------------------------------------------

def test_crops_are_the_slices_they_claim():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 4, 320, generator=g)
    starts = sample_crop_starts(3, 320, 160, 5, g)
    assert starts.shape == (5, 3) and starts.min() >= 0 and starts.max() <= 160
    views = crop_views(x, starts, 160)
    for v in range(5):
        for b in range(3):
            s = int(starts[v, b])
            assert torch.equal(views[v, b], x[b, :, s:s + 160])
    with pytest.raises(ValueError, match="does not fit"):
        sample_crop_starts(3, 320, 640, 2, g)


def test_lejepa_loss_matches_direct_computation():
    model = LuMamba(CONFIGS["micro"], 0).eval()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 4, 320, generator=g)
    gs, ls = sample_crop_starts(3, 320, 160, 2, g), sample_crop_starts(3, 320, 80, 4, g)
    dirs = random_directions(model.config.d_model, 16, g)
    with torch.no_grad():
        out = lejepa_loss(model, x, NAMES, gs, ls, 160, 80, dirs, lam=0.002)
        emb = lambda s, L: torch.stack([model.encode(x[b:b + 1, :, int(s[b]):int(s[b]) + L], NAMES).mean(1)[0]
                                        for b in range(3)])
        g_emb = torch.stack([emb(s, 160) for s in gs])
        l_emb = torch.stack([emb(s, 80) for s in ls])
        pred = ((g_emb.mean(0) - l_emb) ** 2).mean()
        reg = torch.stack([sigreg(v, dirs) for v in l_emb]).mean()
    # Batched vs one-sample encoder passes differ by float32 reduction order only.
    assert out.prediction.item() == pytest.approx(pred.item(), rel=1e-4)
    assert out.sigreg.item() == pytest.approx(reg.item(), rel=1e-4)
    assert out.total.item() == pytest.approx(0.998 * pred.item() + 0.002 * reg.item(), rel=1e-4)
    # Per-sample channel lists give the same embeddings as one shared list.
    per_sample = embed_views(model, crop_views(x, gs, 160), [NAMES] * 3)
    assert torch.allclose(per_sample, embed_views(model, crop_views(x, gs, 160), NAMES), atol=1e-6)


# ---- the three modes ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["mixed", "reconstruction", "lejepa"])
def test_every_mode_gives_finite_loss_and_gradients(mode):
    torch.manual_seed(0)
    objective = PretrainObjective(LuMamba(CONFIGS["micro"], 0), ObjectiveConfig(mode=mode, **SMALL_VIEWS))
    x = torch.randn(4, 4, 320)
    draw = objective.draw(4, 4, 320, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    loss, parts = objective(x, NAMES, draw)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())
    expected_parts = {"mixed": {"rec", "rec_masked", "rec_visible", "qs", "lejepa", "pred", "sigreg"},
                      "reconstruction": {"rec", "rec_masked", "rec_visible", "qs"},
                      "lejepa": {"lejepa", "pred", "sigreg"}}[mode]
    assert set(parts) == expected_parts
    combined = {"mixed": parts.get("rec", 0) + parts.get("qs", 0) + 0.05 * parts.get("lejepa", 0),
                "reconstruction": parts.get("rec", 0) + parts.get("qs", 0), "lejepa": parts.get("lejepa", 0)}[mode]
    assert loss.item() == pytest.approx(float(combined), rel=1e-6)
    for name, p in objective.model.named_parameters():
        if not p.requires_grad:
            continue
        unused_in_lejepa = name.startswith(("decoder_head.", "channel_emb.", "mask_token"))
        if mode == "lejepa" and unused_in_lejepa:
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_sigreg_gradient_is_finite_on_collapsed_embeddings():
    z = torch.zeros(32, 8, requires_grad=True)
    sigreg(z, random_directions(8, 4, torch.Generator().manual_seed(0))).backward()
    assert torch.isfinite(z.grad).all()


def test_objective_config_is_validated():
    with pytest.raises(ValueError, match="objective.mode"):
        ObjectiveConfig(mode="mae")
    with pytest.raises(ValueError, match="objective.lejepa_lambda"):
        ObjectiveConfig(lejepa_lambda=-1)
    with pytest.raises(ValueError, match="n_classes=0"):
        PretrainObjective(LuMamba(CONFIGS["micro"], 2))
