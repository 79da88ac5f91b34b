"""How tfrig runs nvidia-smi on a host: within a time limit, whatever the driver does. Apart from
tfrig.knowledge.nvsmi (the parsing), so that the tasks can name these commands as they load
without loading the parser and its libraries."""

from __future__ import annotations

# A hung GPU or driver can leave nvidia-smi waiting in the kernel for good, where no signal ends
# it (and `timeout` would wait on it too): it runs in the background, and after SMI_SECONDS the
# probe answers without it, exit 124, which nvsmi.diagnose_failure reads as "the driver does not answer".
SMI_SECONDS = 20
SMI_TIMED_OUT = 124


def bounded(command: str) -> str:
    """`command` (an nvidia-smi run) as a shell command that ends within SMI_SECONDS either way."""
    ticks = SMI_SECONDS * 10
    return (
        f'f=$(mktemp) || exit 125; {command} >"$f" 2>&1 </dev/null & p=$!; i=0; '
        f"while kill -0 $p 2>/dev/null && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; "
        f'if kill -0 $p 2>/dev/null; then kill -9 $p 2>/dev/null; cat "$f"; rm -f "$f"; exit {SMI_TIMED_OUT}; fi; '
        f'wait $p; r=$?; cat "$f"; rm -f "$f"; exit $r'
    )


VERSION_COMMAND = bounded("nvidia-smi --query-gpu=driver_version --format=csv,noheader")
