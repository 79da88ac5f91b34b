# Runs on the target inside the TensorFlow environment: lists the GPUs, places a matrix
# multiplication on the first one (or the CPU), checks the result against NumPy, and prints one
# JSON line after a marker. TensorFlow's own log goes to stderr, where tfrig reads the diagnosis.
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
started = time.time()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

gpus = tf.config.list_physical_devices("GPU")
build = dict(tf.sysconfig.get_build_info())
device = "/GPU:0" if gpus else "/CPU:0"
a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)
with tf.device(device):
    product = tf.linalg.matmul(tf.constant(a), tf.constant(b))
placed = product.device
ok = bool(np.allclose(product.numpy(), a @ b, rtol=1e-3, atol=1e-2))
details = [tf.config.experimental.get_device_details(g) for g in gpus]
found = [
    {"name": d.get("device_name"), "compute_capability": ".".join(map(str, d.get("compute_capability", ())))}
    for d in details
]
print(
    "@@tfrig-verify "
    + json.dumps(
        {
            "tensorflow": tf.__version__,
            "python": ".".join(map(str, sys.version_info[:3])),
            "built_with_cuda": tf.test.is_built_with_cuda(),
            "cuda": build.get("cuda_version"),
            "cudnn": build.get("cudnn_version"),
            "gpus": [
                {
                    "name": d.get("device_name"),
                    "compute_capability": ".".join(map(str, d.get("compute_capability", ()))),
                }
                for d in details
            ],
            "device": placed,
            "result_ok": ok,
            "seconds": round(time.time() - started, 2),
        }
    ),
    flush=True,
)
