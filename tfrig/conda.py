"""conda: Miniconda (or Miniforge) on a target, its environments and CUDA libraries."""

from __future__ import annotations

from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig.host import Host, shell_path
from tfrig.runner import on_targets
from tfrig.taskdef import task


def _prefix(c: Any, prefix: str | None) -> str:
    return prefix or c.config.conda.prefix


@task(
    help={
        "prefix": "conda's install prefix (default conda.prefix, ~/miniconda3)",
        "hosts": "user@host:port[,...]",
        "json": "print only JSON on stdout",
    }
)
def list_(c, prefix=None, hosts=None, json=False):
    """List the conda environments on the target."""
    where = _prefix(c, prefix)

    def work(host: Host) -> dict[str, Any]:
        fact = host.fact(f"{shell_path(where + '/bin/conda')} env list --json")
        if not fact.ok:
            raise Exit(f"[{host.label}] no conda at {where}: run `inv conda.install`.")
        import json as json_module

        envs = json_module.loads(fact.out)["envs"]
        if not json:
            for env in envs:
                host.say(env)
        return {"prefix": where, "envs": envs}

    on_targets(c, work, hosts=hosts, json_out=json, summary=lambda r: f"{len(r['envs'])} envs")


ns = Collection("conda")
ns.add_task(list_, name="list")
ns.configure({"conda": {"prefix": "~/miniconda3"}})
