"""Final-model run of the `gpu` preset on one GPU, without Snakemake (GPU machines may lack it).

Usage: python scripts/gpu_final.py --images fer2013_u8.xz --out OUTDIR [--arch vgg_deep] [--budget-s 420]

Input: the 35,887 FER2013 images as raw uint8 (labels, split, then images; `lzma`), since the
CSV does not travel to a remote GPU machine. Writes the same HDF5 as `ferstudy prepare`, then runs
`ferstudy train-final` and `ferstudy evaluate-final` exactly as the workflow does. The number of
epochs is the preset's, capped by a short timing probe so the run fits `--budget-s` (stated in the
output). The architecture is named up front: PrivateTest plays no part in any choice.
"""

import argparse
import json
import lzma
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ferstudy.config import deep_merge, load_defaults, resolve_arch  # noqa: E402
from ferstudy.data import write_h5  # noqa: E402
from ferstudy.io import write_json, write_text  # noqa: E402


def decode(path, n=35887, size=48 * 48):
    blob = lzma.decompress(Path(path).read_bytes())
    labels = np.frombuffer(blob, np.uint8, n, 0).copy()
    split = np.frombuffer(blob, np.uint8, n, n).copy()
    images = np.frombuffer(blob, np.uint8, n * size, 2 * n).reshape(n, 48, 48).copy()
    return images, labels, split


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", default="vgg_deep")
    ap.add_argument("--budget-s", type=float, default=420)
    ap.add_argument("--work", default="/tmp/ferstudy_gpu")
    ap.add_argument("--probe-images", type=int, default=8000)
    ap.add_argument("--min-epochs", type=int, default=10)
    ap.add_argument("--subsample", type=float, help="testing only: train on a fraction of Training")
    args = ap.parse_args()
    out, work = Path(args.out), Path(args.work)
    t_start = time.perf_counter()

    images, labels, split = decode(args.images)
    meta = json.loads(Path(args.images).with_name("fer2013_meta.json").read_text())
    h5 = work / "data" / "dataset.h5"
    write_h5(h5, images, labels, split, np.arange(len(labels)), 5, 0, "fer2013", "fer2013.csv.gz", meta["sha256"])

    raw = load_defaults()
    cfg = deep_merge(raw, raw["presets"]["gpu"])
    run_cfg = resolve_arch(cfg, args.arch)
    final_training = cfg["final"]["training"]
    if args.subsample:
        final_training = {**final_training, "subsample": args.subsample}
    preset_epochs = deep_merge(run_cfg["training"], final_training)["epochs"]

    # Timing probe: two short epochs on a subset, same model and settings.
    import torch
    from ferstudy.data import load_h5
    from ferstudy.train import fit

    data = load_h5(h5)
    probe_cfg = json.loads(json.dumps(run_cfg))
    probe_cfg["training"] = deep_merge(probe_cfg["training"], {**final_training, "epochs": 2})
    train_idx = data.indices("Training")[: args.probe_images]
    public = data.indices("PublicTest")
    _, state = fit(probe_cfg, data, train_idx, public, work / "probe.pt", select_best=False, progress=print)
    per_image = state["history"][-1]["seconds"] / len(train_idx)  # includes the PublicTest evaluation share
    eval_s = state["history"][-1]["seconds"] - len(train_idx) / state["history"][-1]["images_per_s"]
    epoch_s = len(data.indices("Training")) / state["history"][-1]["images_per_s"] + eval_s
    epochs = int(max(args.min_epochs, min(preset_epochs, args.budget_s // (epoch_s * 1.08))))
    probe = {
        "probe_epoch_s": state["history"][-1]["seconds"],
        "predicted_epoch_s": epoch_s,
        "per_image_s": per_image,
        "preset_epochs": preset_epochs,
        "epochs_run": epochs,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    print(json.dumps(probe), flush=True)
    write_json(out / "probe.json", probe)

    cv = work / "cv"
    write_text(cv / args.arch / "run_config.yaml", __import__("yaml").safe_dump(run_cfg, sort_keys=False))
    write_text(
        work / "final" / "final_config.yaml",
        __import__("yaml").safe_dump({"architecture": args.arch, "training": {**final_training, "epochs": epochs}}),
    )
    cmd = [
        sys.executable,
        "-m",
        "ferstudy",
        "train-final",
        "--h5",
        str(h5),
        "--run-config",
        str(cv / args.arch / "run_config.yaml"),
        "--final-config",
        str(work / "final" / "final_config.yaml"),
        "--out-dir",
        str(work / "final"),
        "--checkpoint",
        str(work / "ck.pt"),
        "--threads",
        "8",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    train_s = time.perf_counter() - t0
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ferstudy",
            "evaluate-final",
            "--public",
            str(work / "final" / "predictions_public.csv"),
            "--private",
            str(work / "final" / "predictions_private.csv"),
            "--out",
            str(out / "metrics.json"),
        ],
        check=True,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    summary = {
        **probe,
        "train_final_s": train_s,
        "total_s": time.perf_counter() - t_start,
        "public_acc": metrics["public"]["accuracy"],
        "private_acc": metrics["private"]["accuracy"],
    }
    for name in ("history.csv", "config.yaml"):
        (out / name).write_bytes((work / "final" / name).read_bytes())
    write_json(out / "summary.json", summary)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
