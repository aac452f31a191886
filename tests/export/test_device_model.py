"""The device model (export/device_model.py): decode speed from the profile's bandwidth and an
efficiency fitted on agent measurements, memory from the host's measurement."""

from __future__ import annotations

import pytest

from export.device_model import (
    DEFAULT_EFFICIENCY,
    DEFAULT_PREFILL_EFFICIENCY,
    Calibration,
    Measurement,
    calibrate,
    compare,
    predict,
)
from export.profiles import get_profile

MB = 2**20


def test_without_measurements_the_default_efficiency_predicts_from_bandwidth() -> None:
    pi = get_profile("raspberry-pi-5")
    cal = calibrate(pi, [])
    assert cal == Calibration(DEFAULT_EFFICIENCY, 0, None, DEFAULT_PREFILL_EFFICIENCY, 0, None)
    p = predict(pi, 219 * MB, host_peak_mb=300.0, calibration=cal)
    assert p is not None
    # 17.1 GB/s x 0.5 / 219 MB read per token
    assert p["decode_tokens_per_s"] == pytest.approx(0.5 * 17.1e9 / (219 * MB), rel=1e-3)
    assert p["peak_memory_mb"] == 300.0 and "default" in p["basis"]


def test_agent_measurements_fit_the_efficiency_and_say_how_far_off_it_was() -> None:
    pi = get_profile("raspberry-pi-5")
    bw = 17.1e9
    # three measurements at efficiencies 0.30, 0.40, 0.60 of the nominal bandwidth
    points = [Measurement(100 * MB, e * bw / (100 * MB)) for e in (0.30, 0.40, 0.60)]
    cal = calibrate(pi, points)
    assert cal.samples == 3 and cal.efficiency == pytest.approx(0.40)
    # predicted / measured - 1 on each: 0.40/0.30-1, 0, 0.40/0.60-1; median |.| = 1/3
    assert cal.median_abs_error == pytest.approx(1 / 3, abs=1e-4)
    p = predict(pi, 200 * MB, host_peak_mb=None, calibration=cal)
    assert p is not None and p["decode_tokens_per_s"] == pytest.approx(0.40 * bw / (200 * MB), rel=1e-3)
    assert p["peak_memory_mb"] == 200.0  # no host figure: at least the file
    assert "fitted on 3 agent measurement(s) of raspberry-pi-5, median error 33%" in p["basis"]
    assert "prefill_tokens_per_s" not in p  # no parameter count given: no prefill figure
    assert compare(p, p["decode_tokens_per_s"] / 2)["error_vs_measured"] == pytest.approx(1.0)


def test_memory_is_never_below_the_file_and_some_profiles_have_no_model() -> None:
    laptop = get_profile("laptop-cpu")
    p = predict(laptop, 500 * MB, host_peak_mb=120.0, calibration=calibrate(laptop, []))
    assert p is not None and p["peak_memory_mb"] == 500.0  # the host mapped only what it touched
    assert predict(get_profile("browser-webgpu"), 500 * MB, 600.0, calibrate(laptop, [])) is None
    assert predict(get_profile("gpu-server"), 500 * MB, 600.0, calibrate(laptop, [])) is None


def test_prefill_is_predicted_from_the_profiles_compute_and_the_parameters() -> None:
    pi = get_profile("raspberry-pi-5")
    p = predict(pi, 219 * MB, 300.0, calibrate(pi, []), parameters=354_000_000)
    assert p is not None
    # 614 GOPS x 0.25 / (2 x 354M operations per token) = 216.8 tokens/s
    assert p["prefill_tokens_per_s"] == pytest.approx(0.25 * 614e9 / (2 * 354e6), rel=1e-3)
    assert p["prefill_basis"].startswith("614 GOPS nominal x efficiency 0.25 (default")
    assert "354M parameters" in p["prefill_basis"]


def test_agent_prefill_measurements_fit_their_own_efficiency() -> None:
    pi = get_profile("raspberry-pi-5")
    params = 354_000_000
    # decode at efficiency 0.5; prefill at 0.10, 0.12, 0.20 of the compute peak; one older agent
    # result without a parameter count fits decode only
    prefill = [e * 614e9 / (2 * params) for e in (0.10, 0.12, 0.20)]
    decode = 0.5 * 17.1e9 / (219 * MB)
    points = [Measurement(219 * MB, decode, params, tps) for tps in prefill] + [Measurement(219 * MB, decode)]
    cal = calibrate(pi, points)
    assert cal.samples == 4 and cal.efficiency == pytest.approx(0.5)
    assert cal.prefill_samples == 3 and cal.prefill_efficiency == pytest.approx(0.12)
    # 0.12/0.10 - 1 = 0.2, 0, 0.12/0.20 - 1 = -0.4: median |.| 0.2
    assert cal.prefill_median_abs_error == pytest.approx(0.2, abs=1e-4)
    p = predict(pi, 219 * MB, None, cal, parameters=params)
    assert p is not None and p["prefill_tokens_per_s"] == pytest.approx(prefill[1], rel=1e-3)
    assert "fitted on 3 agent measurement(s) of raspberry-pi-5, median error 20%" in p["prefill_basis"]
    both = compare(p, decode, prefill[0])
    assert both["error_vs_measured"] == pytest.approx(0.0, abs=1e-3)
    assert both["prefill_error_vs_measured"] == pytest.approx(0.2, abs=1e-3)
    assert "prefill_error_vs_measured" not in compare(p, decode)  # the agent sent no prefill figure
