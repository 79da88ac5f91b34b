"""The root collection: one namespace per module, and the settings every namespace shares."""

from invoke import Collection

from tfrig import conda, docker, driver, gcp, gpu, tf

ns = Collection()
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
            # SSH host keys (tfrig.hostkeys): strict, or accept-new; and a known-hosts file of yours.
            "host_keys": "strict",
            "known_hosts": "",
            "yes": False,
        }
    }
)
