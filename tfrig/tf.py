"""tf: which TensorFlow fits, installing it, and proving it runs on the GPU."""

from __future__ import annotations

from invoke import Collection

from tfrig.catalog import compat
from tfrig.taskdef import task
from tfrig.ui import print_json, table


@task(help={"json": "print only JSON on stdout"})
def versions(c, json=False):
    """Show TensorFlow releases with their Python range, CUDA and cuDNN."""
    rows = compat()["tensorflow_builds"]["linux_gpu"]
    if json:
        print_json(rows)
        return
    table(
        ["tensorflow", "python", "cuda", "cudnn", "package"],
        [(r["tf"], r["python"], r["cuda"], r["cudnn"], r["package"]) for r in rows],
    )


ns = Collection("tf", versions)
ns.configure({"tf": {}})
