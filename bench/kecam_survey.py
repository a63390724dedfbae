"""The keras-cv-attention-models ("kecam") survey: build one small model per
architecture family with random weights (tf_keras, ``pretrained=None``),
save it as a legacy ``.h5``, convert it and compare the port with Keras.

    python bench/kecam_survey.py                       # every family
    python bench/kecam_survey.py --only ConvNeXt,LeViT
    python bench/kecam_survey.py --json bench/kecam_survey.json --readme

kecam is installed with ``pip install --no-deps keras-cv-attention-models``
(it also imports Pillow).  Each model is built by this file's ``--serve``
mode in a TensorFlow subprocess (``TF_USE_LEGACY_KERAS=1``, kecam's own
setting), which answers one JSON line per model with the Keras output on a
seeded input; the conversion runs here, without TensorFlow.  The model file
is deleted once checked.  Results are measured, never written by hand: the
README table between ``<!-- kecam:start -->`` and ``<!-- kecam:end -->`` is
this script's output (``--readme``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ATOL = 1e-4
START, END = "<!-- kecam:start -->", "<!-- kecam:end -->"

# family -> (kecam constructor, keyword arguments); the smallest variant of
# each family at the smallest input it accepts.
FAMILIES = {
    "AotNet": ("aotnet.AotNet50", {"input_shape": (64, 64, 3)}),
    "BEiT": ("beit.Beit", {"input_shape": (32, 32, 3), "depth": 2,
                           "embed_dim": 32, "num_heads": 2, "patch_size": 8,
                           "model_name": "beit_tiny"}),
    "BotNet": ("botnet.BotNet26T", {"input_shape": (64, 64, 3)}),
    "CAFormer": ("caformer.CAFormerS18", {"input_shape": (64, 64, 3)}),
    "CMT": ("cmt.CMTTiny", {"input_shape": (64, 64, 3)}),
    "CoaT": ("coat.CoaTLiteTiny", {"input_shape": (64, 64, 3)}),
    "CoAtNet": ("coatnet.CoAtNet0", {"input_shape": (64, 64, 3)}),
    "ConvNeXt": ("convnext.ConvNeXtTiny", {"input_shape": (64, 64, 3)}),
    "ConvNeXtV2": ("convnext.ConvNeXtV2Atto", {"input_shape": (64, 64, 3)}),
    "CotNet": ("cotnet.CotNet50", {"input_shape": (64, 64, 3)}),
    "CSPNeXt": ("cspnext.CSPNeXtTiny", {"input_shape": (64, 64, 3)}),
    "DaViT": ("davit.DaViT_T", {"input_shape": (64, 64, 3)}),
    "DINOv2": ("beit.DINOv2_ViT_Small14", {"input_shape": (28, 28, 3)}),
    "EdgeNeXt": ("edgenext.EdgeNeXt_XX_Small", {"input_shape": (64, 64, 3)}),
    "EfficientFormer": ("efficientformer.EfficientFormerL1",
                        {"input_shape": (64, 64, 3)}),
    "EfficientFormerV2": ("efficientformer.EfficientFormerV2S0",
                          {"input_shape": (64, 64, 3)}),
    "EfficientNetV1": ("efficientnet.EfficientNetV1B0",
                       {"input_shape": (64, 64, 3)}),
    "EfficientNetV2": ("efficientnet.EfficientNetV2B0",
                       {"input_shape": (64, 64, 3)}),
    "EfficientViT_B": ("efficientvit.EfficientViT_B0",
                       {"input_shape": (64, 64, 3)}),
    "EfficientViT_M": ("efficientvit.EfficientViT_M0",
                       {"input_shape": (64, 64, 3)}),
    "EVA": ("beit.EVA", {"input_shape": (28, 28, 3), "depth": 2,
                         "embed_dim": 32, "num_heads": 2, "patch_size": 7}),
    "EVA02": ("beit.EVA02TinyPatch14", {"input_shape": (28, 28, 3)}),
    "FasterNet": ("fasternet.FasterNetT0", {"input_shape": (64, 64, 3)}),
    "FasterViT": ("fastervit.FasterViT0", {"input_shape": (64, 64, 3)}),
    "FastViT": ("fastvit.FastViT_T8", {"input_shape": (64, 64, 3)}),
    "FBNetV3": ("mobilenetv3_family.FBNetV3B", {"input_shape": (64, 64, 3)}),
    "FlexiViT": ("beit.FlexiViTSmall", {"input_shape": (32, 32, 3)}),
    "GCViT": ("gcvit.GCViT_XXTiny", {"input_shape": (64, 64, 3)}),
    "GhostNet": ("ghostnet.GhostNet_050", {"input_shape": (64, 64, 3)}),
    "GhostNetV2": ("ghostnet.GhostNetV2_100", {"input_shape": (64, 64, 3)}),
    "GMLP": ("mlp_family.GMLPTiny16", {"input_shape": (64, 64, 3)}),
    "GPViT": ("gpvit.GPViT_L1", {"input_shape": (64, 64, 3)}),
    "HaloNet": ("halonet.HaloNetH0", {"input_shape": (64, 64, 3)}),
    "Hiera": ("hiera.HieraTiny", {"input_shape": (64, 64, 3)}),
    "HorNet": ("hornet.HorNetTiny", {"input_shape": (64, 64, 3)}),
    "IFormer": ("iformer.IFormerSmall", {"input_shape": (64, 64, 3)}),
    "InceptionNeXt": ("inceptionnext.InceptionNeXtTiny",
                      {"input_shape": (64, 64, 3)}),
    "LCNet": ("mobilenetv3_family.LCNet050", {"input_shape": (64, 64, 3)}),
    "LeViT": ("levit.LeViT128S", {"input_shape": (64, 64, 3)}),
    "MaxViT": ("maxvit.MaxViT_Tiny", {"input_shape": (64, 64, 3)}),
    "MLPMixer": ("mlp_family.MLPMixerS32", {"input_shape": (64, 64, 3)}),
    "MobileNetV3": ("mobilenetv3_family.MobileNetV3Small050",
                    {"input_shape": (64, 64, 3)}),
    "MobileViT": ("mobilevit.MobileViT_XXS", {"input_shape": (64, 64, 3)}),
    "MobileViT_V2": ("mobilevit.MobileViT_V2_050",
                     {"input_shape": (64, 64, 3)}),
    "MogaNet": ("moganet.MogaNetXtiny", {"input_shape": (64, 64, 3)}),
    "NAT": ("nat.NAT_Mini", {"input_shape": (64, 64, 3)}),
    "NFNet": ("nfnets.NFNetL0", {"input_shape": (64, 64, 3)}),
    "PVT_V2": ("pvt.PVT_V2B0", {"input_shape": (64, 64, 3)}),
    "RegNetY": ("resnet_family.RegNetY040", {"input_shape": (64, 64, 3)}),
    "RegNetZ": ("resnet_family.RegNetZB16", {"input_shape": (64, 64, 3)}),
    "RepViT": ("repvit.RepViT_M09", {"input_shape": (64, 64, 3)}),
    "ResMLP": ("mlp_family.ResMLP12", {"input_shape": (64, 64, 3)}),
    "ResNeSt": ("resnest.ResNest50", {"input_shape": (64, 64, 3)}),
    "ResNetD": ("resnet_family.ResNet50D", {"input_shape": (64, 64, 3)}),
    "ResNetQ": ("resnet_family.ResNet51Q", {"input_shape": (64, 64, 3)}),
    "ResNeXt": ("resnet_family.ResNeXt50", {"input_shape": (64, 64, 3)}),
    "SwinTransformerV2": ("swin_transformer_v2.SwinTransformerV2Tiny_window8",
                          {"input_shape": (64, 64, 3)}),
    "TinyNet": ("mobilenetv3_family.TinyNetE", {"input_shape": (64, 64, 3)}),
    "TinyViT": ("tinyvit.TinyViT_5M", {"input_shape": (64, 64, 3)}),
    "UniFormer": ("uniformer.UniformerSmall32", {"input_shape": (64, 64, 3)}),
    "VanillaNet": ("vanillanet.VanillaNet5", {"input_shape": (64, 64, 3)}),
    "ViT": ("beit.ViTTinyPatch16", {"input_shape": (32, 32, 3)}),
    "VOLO": ("volo.VOLO_d1", {"input_shape": (64, 64, 3)}),
    "WaveMLP": ("mlp_family.WaveMLP_T", {"input_shape": (64, 64, 3)}),
    "EfficientDet": ("efficientdet.EfficientDetD0",
                     {"input_shape": (64, 64, 3)}),
    "YOLOR": ("yolor.YOLOR_CSP", {"input_shape": (64, 64, 3)}),
    "YOLOV7": ("yolov7.YOLOV7_Tiny", {"input_shape": (64, 64, 3)}),
    "YOLOV8": ("yolov8.YOLOV8_N", {"input_shape": (64, 64, 3)}),
    "YOLOX": ("yolox.YOLOXNano", {"input_shape": (64, 64, 3)}),
    "YOLO_NAS": ("yolov8.YOLO_NAS_S", {"input_shape": (64, 64, 3)}),
    "GPT2": ("gpt2.GPT2_Base", {"max_block_size": 16, "vocab_size": 64,
                                "num_blocks": 1}),
    "LLaMA2": ("llama2.LLaMA2_15M", {"max_block_size": 16,
                                     "vocab_size": 64}),
}


# -- the Keras side (a subprocess) -----------------------------------------
def serve(out: Path) -> None:
    """Read family names on stdin; build, save and run each; answer JSON."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import importlib
    import contextlib
    import io
    import tensorflow as tf
    import keras_cv_attention_models as kecam  # noqa: F401

    for line in sys.stdin:
        family = line.strip()
        path, kwargs = FAMILIES[family]
        row = {"family": family, "constructor": path}
        start = time.time()
        try:
            mod, fn = path.rsplit(".", 1)
            ctor = getattr(importlib.import_module(
                f"keras_cv_attention_models.{mod}"), fn)
            tf.keras.utils.set_random_seed(0)
            with contextlib.redirect_stdout(io.StringIO()):
                model = ctor(pretrained=None, **kwargs)
            d = out / family
            d.mkdir(parents=True, exist_ok=True)
            model.save(d / "model.h5")
            rng = np.random.default_rng(0)
            inputs = []
            for t in model.inputs:
                shape = [2] + [s for s in t.shape[1:]]
                if t.dtype.is_integer:
                    inputs.append(rng.integers(0, 64, shape).astype(
                        t.dtype.as_numpy_dtype))
                else:
                    inputs.append(rng.standard_normal(shape).astype(
                        "float32"))
            outs = model(inputs if len(inputs) > 1 else inputs[0],
                         training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            np.savez(d / "reference.npz",
                     **{f"in_{i}": a for i, a in enumerate(inputs)},
                     **{f"out_{i}": np.asarray(o) for i, o in enumerate(outs)})
            row.update(built=True, dir=str(d), params=int(
                model.count_params()), layers=len(model.layers))
        except Exception as exc:
            row.update(built=False,
                       error=f"{type(exc).__name__}: {exc}"[:300])
        row["build_seconds"] = round(time.time() - start, 1)
        print(json.dumps(row), flush=True)


# -- the torch side --------------------------------------------------------
def check(row: dict, atol: float = ATOL) -> dict:
    """Convert the saved model and compare the port with Keras."""
    sys.path.insert(0, str(ROOT))
    import migrate
    from migrate.errors import UnsupportedLayers
    from migrate.verify import run_port

    d = Path(row["dir"])
    res = dict(row)
    with np.load(d / "reference.npz", allow_pickle=False) as ref:
        xs = [ref[k] for k in sorted(ref.files) if k.startswith("in_")]
        want = [ref[k].astype(np.float64) for k in sorted(ref.files)
                if k.startswith("out_")]
    start = time.time()
    try:
        conv = migrate.convert(d / "model.h5")
        got = run_port(conv, xs)
        err = max(float(np.max(np.abs(g - w))) if g.shape == w.shape
                  else float("inf") for g, w in zip(got, want))
        res.update(converted=True, max_abs_err=err, passed=err <= atol)
    except UnsupportedLayers as exc:
        res.update(converted=False, passed=False,
                   missing=sorted({f"{cls}: {why}"[:160]
                                   for _, cls, why in exc.problems}))
    except Exception as exc:
        res.update(converted=False, passed=False,
                   error=f"{type(exc).__name__}: {exc}"[:400])
    res["convert_seconds"] = round(time.time() - start, 1)
    return res


def run(families, work: Path, log=print) -> list[dict]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(work)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        stderr=subprocess.DEVNULL, env=dict(os.environ,
                                            TF_CPP_MIN_LOG_LEVEL="3"))
    results = []
    try:
        for family in families:
            proc.stdin.write(family + "\n")
            proc.stdin.flush()
            row = json.loads(proc.stdout.readline())
            if row.get("built"):
                row = check(row)
                shutil.rmtree(row["dir"], ignore_errors=True)
            row.pop("dir", None)
            log(json.dumps(row))
            results.append(row)
    finally:
        proc.stdin.close()
        proc.wait()
    return results


def table(results: list[dict]) -> str:
    lines = ["| family | kecam model | params | result | max abs err |",
             "|---|---|---:|---|---:|"]
    seen = {r["family"] for r in results}
    results = results + [{"family": f, "constructor": c, "missing_run": True}
                         for f, (c, _) in FAMILIES.items() if f not in seen]
    for r in sorted(results, key=lambda r: r["family"].lower()):
        if r.get("missing_run"):
            result, err = "not measured in this run", ""
        elif not r.get("built"):
            result, err = f"does not build: {r['error'][:90]}", ""
        elif r.get("passed"):
            result, err = "converts, matches", f"{r['max_abs_err']:.1e}"
        elif r.get("converted"):
            result, err = "converts, differs", f"{r['max_abs_err']:.1e}"
        elif r.get("missing"):
            result = "refused: " + "; ".join(
                m.split(":")[0] for m in r["missing"])[:200]
            err = ""
        else:
            result, err = f"error: {r['error'][:120]}", ""
        ctor = r["constructor"].rsplit(".", 1)[1]
        params = f"{r['params'] / 1e6:.1f}M" if r.get("params") else ""
        lines.append(f"| {r['family']} | {ctor} | {params} | {result} "
                     f"| {err} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", metavar="DIR")
    ap.add_argument("--only", help="comma-separated family names")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--from-json", type=Path, nargs="+",
                    help="only print the table (several files: the later "
                    "row of a family wins)")
    ap.add_argument("--readme", action="store_true",
                    help="replace the README table with the results")
    args = ap.parse_args(argv)
    if args.serve:
        return serve(Path(args.serve))
    if args.from_json:
        rows = {}
        for path in args.from_json:
            for r in json.loads(path.read_text()):
                rows[r["family"]] = r
        results = list(rows.values())
    else:
        families = args.only.split(",") if args.only else list(FAMILIES)
        with tempfile.TemporaryDirectory() as work:
            results = run(families, Path(work))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    print(text)
    if args.readme:
        readme = ROOT / "README.md"
        doc = readme.read_text()
        head, rest = doc.split(START, 1)
        readme.write_text(f"{head}{START}\n{text}\n{END}"
                          f"{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    main()
