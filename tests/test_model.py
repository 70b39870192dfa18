"""The reference model: published sizes, checkpoint layout, shapes, gradients, bad inputs."""
import math

import pytest
import torch
from safetensors.torch import save_file

from lumamba import CONFIGS, CheckpointError, LuMamba, load_pretrained, save_checkpoint
from lumamba.channels import ChannelError
from lumamba.patch_embed import FrequencyEmbed
from lumamba.profile import macs

from conftest import TCP22

TINY = CONFIGS["tiny"]
MONO16 = ["FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3", "T4", "T5", "T6"]


def n_params(model, prefixes=None):
    return sum(v.numel() for k, v in model.state_dict().items() if prefixes is None or k.startswith(prefixes))


def test_parameter_counts_match_the_paper(official):
    pre, cls = LuMamba(TINY), LuMamba(TINY, n_classes=2)
    encoder = n_params(pre) - n_params(pre, ("decoder_head", "channel_emb"))
    assert encoder == 4_094_777
    assert n_params(cls) == 4_631_611
    for part, count in official["pretrain_model"]["params_per_top_level"].items():
        assert n_params(pre, (part + ".",)) + n_params(pre, (part,)) * (part == "mask_token") == count, part


def test_state_dict_keys_and_shapes_are_the_published_ones(official):
    for model, entry in ((LuMamba(TINY), "pretrain_model"), (LuMamba(TINY, 2), "finetune_model_mamba_head")):
        ref = {d["key"]: tuple(d["shape"]) for d in official[entry]["state_dict"]}
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert ours == ref
        grads = {d["key"]: d["requires_grad"] for d in official[entry]["state_dict"]}
        for k, p in model.named_parameters():
            assert p.requires_grad == grads[k], k


def _official_file(tmp_path, official, entry="pretrain_model"):
    g = torch.Generator().manual_seed(1)
    tensors = {"model." + d["key"]: torch.randn(d["shape"], generator=g) for d in official[entry]["state_dict"]}
    path = tmp_path / f"{entry}.safetensors"
    save_file(tensors, str(path))           # no metadata: exactly the published layout
    return path, tensors


def test_strict_round_trip_of_the_published_layout(tmp_path, official):
    path, tensors = _official_file(tmp_path, official)
    assert path.stat().st_size == 16_793_276    # the size of each published checkpoint
    model = load_pretrained(path)
    sd = model.state_dict()
    assert set("model." + k for k in sd) == set(tensors)
    for k, v in sd.items():
        assert torch.equal(v, tensors["model." + k]), k


def test_pretrain_checkpoint_into_classifier_drops_decoder_and_initialises_head(tmp_path, official):
    path, tensors = _official_file(tmp_path, official)
    model = load_pretrained(path, n_classes=2)
    sd = model.state_dict()
    assert not any(k.startswith(("decoder_head", "channel_emb")) for k in sd)
    assert torch.equal(sd["mamba_blocks.1.mamba_rev.A_log"], tensors["model.mamba_blocks.1.mamba_rev.A_log"])
    assert sd["classifier.fc3.weight"].shape == (2, 256)


def test_finetuned_checkpoint_keeps_its_classifier(tmp_path, official):
    path, tensors = _official_file(tmp_path, official, "finetune_model_mamba_head")
    model = load_pretrained(path, n_classes=2)
    assert torch.equal(model.state_dict()["classifier.fc3.bias"], tensors["model.classifier.fc3.bias"])


def test_mismatched_checkpoint_lists_every_bad_key(tmp_path, official):
    path, tensors = _official_file(tmp_path, official)
    del tensors["model.norm_layers.0.bias"]
    tensors["model.extra.weight"] = torch.zeros(3)
    tensors["model.mask_token"] = torch.zeros(1, 1, 32)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tmp_path / "bad.safetensors")
    msg = str(e.value)
    assert "norm_layers.0.bias" in msg and "extra.weight" in msg and "mask_token" in msg
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_pretrained(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_pretrained(tmp_path / "junk.safetensors")


def test_save_checkpoint_round_trips_small_configs(tmp_path):
    model = LuMamba(CONFIGS["small"], n_classes=3).eval()
    path = save_checkpoint(model, tmp_path / "ck" / "small.safetensors")
    again = load_pretrained(path, n_classes=3).eval()
    assert again.config == model.config
    x = torch.randn(1, 4, 80)
    assert torch.equal(model(x, TCP22[:4]), again(x, TCP22[:4]))
    assert [p.name for p in path.parent.iterdir()] == ["small.safetensors"]   # no temp file left behind


@pytest.mark.parametrize("n_channels", [1, 16, 20, 22, 26])
def test_any_channel_count_runs(n_channels):
    names = (TCP22 + ["CZ", "PZ", "FZ", "OZ"])[:n_channels]
    model = LuMamba(TINY, n_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(2, n_channels, 640), names).shape == (2, 2)
        assert model.encode(torch.randn(1, n_channels, 640), names).shape == (1, 16, 384)


@pytest.mark.parametrize("n_samples", [40, 640, 1280, 12800])
def test_any_window_length_runs(n_samples):
    model = LuMamba(TINY, n_classes=2).eval()
    with torch.no_grad():
        z = model.encode(torch.randn(1, 22, n_samples), TCP22)
    assert z.shape == (1, n_samples // 40, 384) and torch.isfinite(z).all()


def test_gradients_reach_every_parameter_in_pretraining():
    model = LuMamba(CONFIGS["small"]).train()
    x = torch.randn(2, 22, 640)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, ::3, :200] = True
    rec = model.reconstruct(x, TCP22, mask)
    rec.pow(2).mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not model.cross_attn.temparature.requires_grad


def test_recurrent_mode_equals_the_parallel_scan():
    model = LuMamba(TINY, n_classes=2).eval()
    x = torch.randn(2, 22, 640)
    with torch.no_grad():
        par, rec = model(x, TCP22), model(x, TCP22, scan="recurrent")
        zp, zr = model.encode(x, TCP22), model.encode(x, TCP22, scan="recurrent")
    # float32, 16 tokens: the two orders of summation differ by a few ulps of the latent scale
    assert (zp - zr).abs().max() <= 1e-5 * zp.abs().max()
    assert (par - rec).abs().max() <= 1e-5


def test_each_sample_uses_its_own_electrode_positions():
    """The published code expands positions with a batch repeat that mixes samples; ours must not."""
    model = LuMamba(CONFIGS["small"], n_classes=2).eval()
    a, b = torch.randn(1, 16, 160), torch.randn(1, 16, 160)
    names_b = list(reversed(MONO16))
    with torch.no_grad():
        both = model(torch.cat([a, b]), [MONO16, names_b])
        alone = torch.cat([model(a, MONO16), model(b, names_b)])
    assert (both - alone).abs().max() <= 1e-6


def test_inference_is_deterministic_but_training_jitters_positions():
    model = LuMamba(CONFIGS["micro"], n_classes=2)
    x = torch.randn(2, 22, 160)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, TCP22), model(x, TCP22))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x, TCP22), model(x, TCP22))


def test_frequency_path_equals_torch_fft():
    emb = FrequencyEmbed(64, 40)
    x = torch.randn(3, 5, 400, dtype=torch.float64)
    spec = torch.fft.rfft(x.reshape(3, 5, 10, 40), dim=-1)
    expected = emb.frequency_to_embed.double()(torch.cat([spec.abs(), spec.angle()], dim=-1))
    got = emb.double()(x)
    assert (got - expected).abs().max() <= 1e-10


def test_channel_names_are_case_insensitive():
    model = LuMamba(CONFIGS["micro"], n_classes=2).eval()
    x = torch.randn(1, 22, 80)
    with torch.no_grad():
        assert torch.equal(model(x, TCP22), model(x, [n.lower() for n in TCP22]))


@pytest.mark.parametrize("x, names, error, text", [
    (torch.randn(1, 2, 80), ["FP1", "XYZ"], ChannelError, "XYZ"),
    (torch.randn(1, 2, 90), ["FP1", "FP2"], ValueError, "multiple of the patch size 40"),
    (torch.randn(2, 80), ["FP1", "FP2"], ValueError, r"shape \(B, C, T\)"),
    (torch.randn(1, 3, 80), ["FP1", "FP2"], ValueError, "3 channels but 2 channel names"),
    (torch.zeros(1, 2, 0), ["FP1", "FP2"], ValueError, "positive multiple"),
    (torch.tensor([[[0.0] * 80, [0.0] * 79 + [math.nan]]]), ["FP1", "FP2"], ValueError, "non-finite.*'FP2'"),
    (torch.zeros(1, 2, 80, dtype=torch.long), ["FP1", "FP2"], ValueError, "floating point"),
])
def test_bad_inputs_raise_clear_errors(x, names, error, text):
    model = LuMamba(CONFIGS["micro"], n_classes=2)
    with pytest.raises(error, match=text):
        model(x, names)


def test_reconstruction_needs_the_pretraining_model_and_a_bool_mask():
    x = torch.randn(1, 2, 80)
    with pytest.raises(ValueError, match="pre-training model"):
        LuMamba(CONFIGS["micro"], n_classes=2).reconstruct(x, ["FP1", "FP2"], torch.zeros_like(x, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be bool"):
        LuMamba(CONFIGS["micro"]).reconstruct(x, ["FP1", "FP2"], torch.zeros_like(x))
    with pytest.raises(ChannelError, match="AF7.*vocabulary"):
        LuMamba(CONFIGS["micro"]).reconstruct(x, ["FP1", "AF7"], torch.zeros_like(x, dtype=torch.bool))


def test_mac_count_of_tiny():
    m = macs(TINY, 22, 1280)
    assert 200e6 < m["total"] < 210e6                      # the paper's "about 205 M"
    assert round(m["mamba_blocks"] / 1e6) == 126
    assert round(m["channel_unification"] / 1e6) == 43
    assert macs(TINY, 22, 2560)["mamba_blocks"] == 2 * m["mamba_blocks"]   # linear in T
    with pytest.raises(ValueError, match="multiple of the patch size"):
        macs(TINY, 22, 1001)


def test_linear_layer_macs_agree_with_a_hook_count():
    """Independent check of the analytic count: count Linear MACs with forward hooks."""
    model = LuMamba(TINY, n_classes=2).eval()
    counted = {"n": 0}

    def hook(mod, inp, out):
        counted["n"] += inp[0].numel() // mod.in_features * mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(hook) for m in model.mamba_blocks.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model.encode(torch.randn(1, 22, 1280), TCP22)
    for h in hooks:
        h.remove()
    c = TINY
    di = c.expand * c.d_model
    per_token_non_linear = di * c.d_conv + 3 * di * c.d_state      # conv + scan, not Linear layers
    assert counted["n"] == macs(TINY, 22, 1280)["mamba_blocks"] - 32 * 4 * per_token_non_linear
