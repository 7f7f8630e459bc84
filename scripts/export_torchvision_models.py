"""Export the torchvision mobile CNNs that benchmarks/bench_cnn_models.py measures to ONNX, once,
into a cache folder (random weights: speed does not depend on them).

    pip install -e '.[bench]'        # torch and torchvision; the tests never need them
    python scripts/export_torchvision_models.py [--out benchmarks/.models]

Writes <name>.onnx for mobilenet_v2, mobilenet_v3_small, shufflenet_v2_x1_0, efficientnet_b0 and
resnet18 (input "input" of shape (batch, 3, 224, 224), batch dynamic; output "logits"; opset 17),
skipping files already there. Nothing is downloaded: torchvision builds the architectures itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MODELS = ("mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x1_0", "efficientnet_b0", "resnet18")
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / ".models"
OPSET = 17


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="cache folder (default: %(default)s)")
    args = parser.parse_args()
    try:
        import torch
        import torchvision
    except ImportError:
        print("error: this script needs torch and torchvision: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name in MODELS:
        path = args.out / f"{name}.onnx"
        if path.exists():
            print(f"{path.name}: already exported")
            continue
        model = getattr(torchvision.models, name)(weights=None).eval()
        example = torch.randn(1, 3, 224, 224)
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
        print(f"{path.name}: exported ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
