"""Write store_v1_arrays/: the contract suite's `arrays` case as schema 1 (featurestore 1d40a94) wrote it."""
import sys
import numpy as np
from featurestore import write_arrays
ARRAYS_SEED, SHARD_ROWS, n = 20240611, 3, 10
rng = np.random.default_rng(ARRAYS_SEED)
features = {"l1": rng.standard_normal((n, 5)).astype(np.float32), "l2": rng.standard_normal((n, 7)).astype(np.float32)}
labels = ["a", "b"] * (n // 2)
splits = ["train"] * 6 + ["test"] * 4
rng.shuffle(splits)
paths = [f"row{i:02d}.npy" for i in range(n)]
write_arrays(sys.argv[1], features, labels=labels, splits=splits, paths=paths, shard_rows=SHARD_ROWS)
