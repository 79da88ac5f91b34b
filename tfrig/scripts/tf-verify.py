# Runs on the target inside the TensorFlow environment and prints one JSON line after a marker.
# It lists the GPUs and runs two ops on the first one (or the CPU):
#   - a matrix product (cuBLAS), checked against NumPy;
#   - reduce_sum of random.normal, TensorFlow's own install check (its own kernels: from 2.18 PTX
#     that the driver JIT-compiles, so a driver older than TensorFlow's CUDA fails here).
# For each op it reports the device the result is really on (placement, not the device list) and
# its time. TensorFlow's own log goes to stderr, where tfrig reads the diagnosis of a failure.
# Works on TensorFlow 1.x (graph mode, a Session) and 2.x, including 2.0-2.2's experimental APIs.
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
started = time.time()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

V1 = tf.__version__.startswith("1.")
config = getattr(tf, "config", None)
if V1 or config is None:
    from tensorflow.python.client import device_lib  # the 1.x way to list devices

    gpu_names = [d.name for d in device_lib.list_local_devices() if d.device_type == "GPU"]
    details = [
        {"device_name": d.physical_device_desc, "compute_capability": ()}
        for d in device_lib.list_local_devices()
        if d.device_type == "GPU"
    ]
else:
    listing = getattr(config, "list_physical_devices", None) or config.experimental.list_physical_devices
    gpus = listing("GPU")
    gpu_names = [g.name for g in gpus]
    describe = getattr(config.experimental, "get_device_details", None)  # 2.3 and later
    details = [describe(g) if describe else {"device_name": g.name} for g in gpus]
device = "/GPU:0" if gpu_names else "/CPU:0"
a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)


def run_op(name, build, check):
    """Build the op on `device`, run it, and report where it ran, whether it is right, how long."""
    began = time.time()
    try:
        if V1:
            graph = tf.Graph()
            with graph.as_default(), tf.device(device):
                tensor = build()
            with tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(allow_soft_placement=False)) as s:
                value = s.run(tensor)
            placed = tensor.device or device
        else:
            with tf.device(device):
                tensor = build()
            value = tensor.numpy()
            placed = tensor.device
        return {"op": name, "device": placed, "ok": bool(check(value)), "ms": round((time.time() - began) * 1000, 1)}
    except Exception as error:  # e.g. CUDA_ERROR_UNSUPPORTED_PTX_VERSION surfaces as an InternalError
        return {"op": name, "device": device, "ok": False, "error": f"{type(error).__name__}: {error}"[:500]}


ops = [
    run_op(
        "matmul",
        lambda: tf.linalg.matmul(tf.constant(a), tf.constant(b)),
        lambda v: np.allclose(v, a @ b, rtol=1e-3, atol=1e-2),
    ),
    run_op(
        "reduce_sum(random.normal)",
        lambda: tf.reduce_sum(tf.random.normal([1000, 1000])),
        lambda v: bool(np.isfinite(v)),
    ),
]
build_info: dict = dict(getattr(getattr(tf, "sysconfig", None), "get_build_info", dict)())  # 2.3 and later
print(
    "@@tfrig-verify "
    + json.dumps(
        {
            "tensorflow": tf.__version__,
            "python": ".".join(map(str, sys.version_info[:3])),
            "built_with_cuda": tf.test.is_built_with_cuda(),
            "cuda": build_info.get("cuda_version"),
            "cudnn": build_info.get("cudnn_version"),
            "gpus": [
                {
                    "name": d.get("device_name"),
                    "compute_capability": ".".join(map(str, d.get("compute_capability", ()))),
                }
                for d in details
            ],
            "ops": ops,
            "device": ops[0]["device"],
            "result_ok": all(op["ok"] for op in ops),
            "seconds": round(time.time() - started, 2),
        }
    ),
    flush=True,
)
