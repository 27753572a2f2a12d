"""Write the schema-1 store fixture (store_v1/ and the expected features store_v1_{a,b}.npy), as featurestore 1d40a94 wrote stores."""
import sys

import numpy as np
from featurestore.manifest import StoreConfig
from featurestore.spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo
from featurestore.writer import StoreWriter
out = sys.argv[1]
rng = np.random.default_rng(7)
spec = ModelSpec(backbone="fixture", weights=WeightsInfo("none", None, False),
    layers=(LayerSpec(name="a", output="a", channels=6, dim=6, stride=None, pooling="none"),
            LayerSpec(name="b", output="b", channels=3, dim=3, stride=None, pooling="none")),
    preprocessing=Preprocessing(crop_size=(1, 1), resize_mode="exact", mean=(0.0,)*3, std=(1.0,)*3))
config = StoreConfig.from_spec(spec, "0"*64, views=1, augment=("hflip",))
w = StoreWriter(out, config, spec, shard_rows=4)
keys = [f"{i:064x}" for i in range(1, 6)]
for i, k in enumerate(keys):
    w.add_rows([k, k], [0, 1], [["cat", "dog", "émeu"][i % 3]] * 2, [["train", "test", None][i % 3]] * 2,
               [f"img/{i}.png"] * 2, {"a": rng.standard_normal((2, 6)).astype(np.float32),
                                        "b": rng.standard_normal((2, 3)).astype(np.float32)})
w.add_alias(keys[0], "img/copy-of-0.png", "cat", "train")
w.add_failure("img/bad.png", None, "ImageDecodeError", "cannot identify image file")
w.close(run={"source": "fixture", "listed": 7, "decoded": 5})
