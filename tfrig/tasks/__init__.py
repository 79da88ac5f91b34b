"""The Invoke namespaces, one module each, and the root collection: the settings every namespace
shares, and the one tie a lower layer needs from a higher one, handed down."""

from pathlib import Path

from invoke import Collection
from invoke.exceptions import Exit

from tfrig import settings
from tfrig.gce import provision
from tfrig.hosts import host
from tfrig.tasks import conda, docker, driver, gcp, gpu, tf
from tfrig.tasks.taskdef import task

# Connecting to a VM tfrig made, the hosts layer asks Compute Engine for its login and host keys,
# and, when the connection ends, what became of the VM.
host.use_vm_access(provision.vm_access)
host.use_vm_lost(provision.vm_lost)


@task(help={"revoke": "take back an earlier allow"})
def allow(c, revoke=False):
    """Let this folder's invoke.yaml set where credentials, code and host keys come from."""
    found = settings.folder_file(Path.cwd())
    if found is None:
        raise Exit(f"No invoke.yaml (or .yml, .json, .py) in {Path.cwd()}: nothing to allow.")
    settings.allow(found, revoke=revoke)
    if revoke:
        print(f"{found}: no longer allowed; its sensitive settings are ignored again.")
    else:
        print(
            f"{found}: allowed as it is now (SHA-256 {settings.file_digest(found)[:16]}...); "
            "an edit needs allowing again."
        )


ns = Collection(allow)
for module in (docker, gcp, driver, gpu, conda, tf):
    ns.add_collection(module.ns)
    # Invoke merges only the called task's path; lifting each namespace's settings to the root
    # lets a composite (gpu.setup reads driver.*) see them, from invoke.yaml and INVOKE_* too.
    ns.configure(module.ns.configuration())
ns.configure(
    {
        "tfrig": {
            # Comma-separated user@host:port list, so INVOKE_TFRIG_HOSTS=a,b works.
            "hosts": "",
            "ssh_key": "",
            "connect_timeout": 15,
            # Seconds between SSH keepalives; a link that answers none for three of them is closed
            # and the task ends saying so (a stalled network never hangs a copy or a job's stream).
            "keepalive": 15.0,
            # SSH host keys (tfrig.hosts.hostkeys): strict, or accept-new; and a known-hosts file of yours.
            "host_keys": "strict",
            "known_hosts": "",
            "yes": False,
        }
    }
)
