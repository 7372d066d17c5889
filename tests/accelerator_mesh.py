"""gradient_flow's step data-parallel over 8 devices with its seeds stacked, built as a GPU or a
TPU host builds it and lowered for that platform, on 8 CPU devices forced at start; run by
tests/test_accelerators.py in a subprocess (the device count is fixed when JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.accelerator_mesh
"""

import tempfile

import jax
import pytest
from jax import export

from experiments import gradient_flow

from .test_accelerators import Built, capture_programs, report_platform, uses_cudnn


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    for platform, name in (("gpu", "cuda"), ("tpu", "tpu")):
        with pytest.MonkeyPatch.context() as monkeypatch, tempfile.TemporaryDirectory() as out:
            report_platform(monkeypatch, platform)
            built = capture_programs(monkeypatch)
            flags = ["--quick", "--cells", "lstm", "--seeds", "2", "--batch", "16", "--devices", "8", "--out", out]
            try:
                gradient_flow.main(flags)
            except Built:
                pass
            assert built["batch"]["inputs"].sharding.num_devices == 8
            for program in ("train", "flow"):
                assert not uses_cudnn(built[program].trace(built["state"], built["batch"]))
                exported = export.export(built[program], platforms=[name])(built["state"], built["batch"])
                assert exported.nr_devices == 8, exported.nr_devices
        print(f"{name}: train and flow steps lowered for 8 devices")


if __name__ == "__main__":
    main()
