"""The root collection: one namespace per module, and the settings every namespace shares."""

from invoke import Collection

from tfrig import conda, docker, driver, gcp, gpu, tf

ns = Collection()
for module in (docker, gcp, driver, gpu, conda, tf):
    ns.add_collection(module.ns)
ns.configure(
    {
        "tfrig": {
            # Comma-separated user@host:port list, so INVOKE_TFRIG_HOSTS=a,b works.
            "hosts": "",
            "ssh_key": "",
            "connect_timeout": 15,
            "yes": False,
        }
    }
)
