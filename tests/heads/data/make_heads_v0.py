"""Write the head fixture heads_v0/ as featurestore 65ab576 wrote and packaged heads (before packaging moved
to heads.package): a tiny model, head files with sidecars, 12 images and what each packaged file gave on them.

Run from a checkout of that commit: ``PYTHONPATH=.:tests:tests/export python make_heads_v0.py OUT``.
"""
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export import export_backbone
from tiny_models import tiny_net
from images import write_good_images
from featurestore import ExtractOptions, decode_image, extract, read_spec
from featurestore.cli import main
from featurestore.cli.package import package_head
out = Path(sys.argv[1])
out.mkdir(parents=True)
work = Path(tempfile.mkdtemp())
export_backbone(tiny_net(), out / "tiny.onnx", layers="stages,last", image_size=32)
for label, seed in (("a", 0), ("b", 300), ("c", 600)):
    write_good_images(work / "imgs" / label, n=20, seed=seed)
extract(out / "tiny.onnx", work / "imgs", work / "store", ExtractOptions(device="cpu", progress=False))
write_good_images(work / "new", n=12, size=(40, 30), seed=4000)
images = np.stack([decode_image(f, read_spec(out / "tiny.onnx").preprocessing) for f in sorted(work.glob("new/*.*"))])
np.save(out / "images.npy", images)
two = "features.4.avg,pre_logits"
heads = {"logreg": ("logreg", "pre_logits", "concat", []), "linear-svm": ("linear-svm", "pre_logits", "concat", []),
         "svm": ("svm", "pre_logits", "concat", []), "tree": ("tree", "pre_logits", "concat", []),
         "forest": ("forest", "pre_logits", "concat", ["n_estimators=3"]), "nb": ("nb", "pre_logits", "concat", []),
         "xgb": ("xgb", "pre_logits", "concat", ["n_estimators=5"]), "knn": ("knn", "pre_logits", "concat", []),
         "ensemble": ("ensemble", "pre_logits", "concat", ['members=["nb", "knn"]']),
         "svm-nystroem": ("svm", "pre_logits", "concat", ["exact_max_samples=10", "n_components=20"]),
         "concat-nb": ("nb", two, "concat", []), "concat-l2-knn": ("knn", two, "concat-l2", []),
         "concat-power-logreg": ("logreg", two, "concat-power", []), "attention-logreg": ("logreg", two, "attention", [])}
expected = {}
for name, (head, layers, fusion, params) in heads.items():
    extra = [a for p in params for a in ("--param", p)]
    assert main(["fit", str(work / "store"), "--head", head, "--layers", layers, "--fusion", fusion,
                 "-o", str(out / f"{name}.skops"), *extra]) == 0
    package_head(out / "tiny.onnx", out / f"{name}.skops", work / f"{name}.onnx")
    session = ort.InferenceSession(str(work / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"images": images})
    expected[name] = {"label": label.tolist(), "probabilities": probabilities.tolist(),
                      "onnx_sha256": hashlib.sha256((work / f"{name}.onnx").read_bytes()).hexdigest()}
(out / "expected.json").write_text(json.dumps(expected, indent=1))
shutil.rmtree(work)
