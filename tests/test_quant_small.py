"""The golden model on the `small` config (two Mamba blocks, two query layers): int8 close to float.

Same thresholds and reasons as test_quant_golden.py: logit SQNR >= 25 dB and every int8 layer's
SQNR >= 20 dB (a broken scale, zero point, weight layout or shift gives < 10 dB). The recurrence
is twice as deep as micro's, so this is where accumulated error would show.
"""
from __future__ import annotations

import numpy as np
import torch

from lumamba.export import export_onnx
from lumamba.montages import MONTAGES
from lumamba.quant import calibrate, float_reference, quantize
from lumamba.quant.drift import LayerErrors

from test_quant_golden import eeg_like, make_model, sqnr


def test_small_int8_is_close_to_float(tmp_path):
    names, n_samples = list(MONTAGES["apava16"]), 320
    model = make_model("small", seed=3)
    export_onnx(model, names, n_samples, tmp_path / "onnx")
    calibration = calibrate(tmp_path / "onnx", eeg_like(6, len(names), n_samples, seed=4), progress=False)
    quantized = quantize(tmp_path / "onnx", calibration, out_dir=tmp_path / "int8", qdq=False)
    x = eeg_like(2, len(names), n_samples, seed=5)
    with torch.no_grad():
        float_logits = model(torch.from_numpy(x), names).numpy()
    golden, reference = quantized.golden(), float_reference(tmp_path / "onnx")
    errors, logits = LayerErrors(), []
    for window in x:
        buffers, taps = golden.run(window, taps=True)
        errors.add(reference.run(window, taps=True)[1], taps)
        logits.append(buffers["logits"][0])
    logits = np.stack(logits)
    layers = errors.sqnr()
    int8_layers = {f"{g.name}/{n.layer}" for g in quantized.graphs.values() for n in g.int8_nodes()}
    print(f"\nsmall: logit SQNR {sqnr(float_logits, logits):.1f} dB, max |logit error| "
          f"{np.abs(logits - float_logits).max():.4f}, worst int8 layer "
          f"{min(int8_layers, key=layers.get)} {min(layers[k] for k in int8_layers):.1f} dB")
    # the front end's statistics passes (convs 1, 1-2, 1-3), its per-patch pass (3 convs, the frequency
    # MLP, the unification's 13), 2 blocks x 2 directions, head step, fc3
    assert quantized.summary["int8_nodes"] == len(int8_layers) == (1 + 2 + 3) + (5 + 13) + 4 * 4 + 5 + 1
    assert sqnr(float_logits, logits) >= 25
    assert min(layers[k] for k in int8_layers) >= 20
