"""gcp.check: what a create in this project needs, checked before anything is spent, like
`sky check`: the credentials and whose they are, the Compute API, the permissions tfrig uses, the
organization policies in force against tfrig's settings, OS Login, the SSH route, and where the
prices come from. One Check per
line, each with a fix where it fails; `blocking` marks what would stop gcp.create."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from invoke.exceptions import Exit

from tfrig.gce import plan as gceplan
from tfrig.gce.config import Settings, image_source, machine_image
from tfrig.gce.config import account as account_of
from tfrig.hosts import targets


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = True  # a failure here would stop gcp.create

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# What tfrig's create, wait and delete call (cloud.google.com/compute/docs/access/iam-permissions):
# permission -> whether a create stops without it. setMetadata: an insert with metadata needs it.
PERMISSIONS = {
    "compute.instances.create": True,
    "compute.instances.setMetadata": True,
    "compute.instances.list": True,
    "compute.instances.delete": True,
    "compute.instances.getGuestAttributes": False,  # host keys: else the serial console
    "compute.instances.getSerialPortOutput": False,
    "compute.firewalls.list": False,  # the pre-flight's firewall check: else not checked
}
ACT_AS = "iam.serviceAccounts.actAs"
# The organization policies Google's foundation blueprint enforces that a create meets
# (terraform-example-foundation 1-org/envs/shared/org_policy.tf), with requireShieldedVm and
# trustedImageProjects that many add.
POLICIES = (
    "compute.requireOsLogin",
    "compute.vmExternalIpAccess",
    "compute.disableGuestAttributesAccess",
    "compute.requireShieldedVm",
    "compute.trustedImageProjects",
)


def run(c: Any, cfg: Settings) -> list[Check]:
    """Every check, in order; later ones are left out where an earlier one makes them moot (no
    credentials, no Compute API)."""
    from tfrig.gce.cloud import ApiError, describe

    try:
        cloud = cfg.cloud()
    except Exit as exc:
        return [Check("credentials", False, "none usable", fix=str(exc))]
    account = account_of(cloud)
    whose = "anonymous (a test API)" if cloud.anonymous else f"as {account or 'an account tfrig cannot name'}"
    quota_project = getattr(cloud.credentials, "quota_project_id", None)
    if quota_project and quota_project != cfg.project:
        whose += f"; API quota and billing are taken from project {quota_project} (the ADC quota project)"
    checks = [Check("credentials", True, whose)]
    try:
        _, metadata = cloud.project_info()
    except ApiError as exc:
        if "USER_PROJECT_DENIED" in (exc.reason + exc.message) and quota_project:
            return [
                *checks,
                Check(
                    "compute_api",
                    False,
                    f"the ADC quota project {quota_project} refuses the call ({exc.message})",
                    fix=f"`gcloud auth application-default set-quota-project {cfg.project}`, or get "
                    f"serviceusage.services.use on {quota_project}",
                ),
            ]
        return [*checks, Check("compute_api", False, f"project {cfg.project}: unusable", fix=describe(exc))]
    checks.append(Check("compute_api", True, f"enabled in project {cfg.project}"))
    checks += _permissions(c, cloud)
    policies, policy_checks = _policies(c, cloud)
    checks += policy_checks
    checks += _oslogin(c, cloud, metadata, policies, account)
    checks += _ssh_route(c, cloud)
    checks.append(_prices(cloud))
    return checks


def _prices(cloud: Any) -> Check:
    """The Cloud Billing Catalog API, where the prices come from (one SKU read): else the table."""
    from tfrig.gce import billing
    from tfrig.gce import prices as gceprice
    from tfrig.gce.cloud import ApiError

    request = {"parent": billing.COMPUTE_SERVICE, "page_size": 1}
    try:
        cloud.call("CloudCatalogClient", "list_skus", request=request)
    except (ApiError, Exit) as exc:
        why = exc.message if isinstance(exc, ApiError) else str(exc)
        disabled = isinstance(exc, ApiError) and exc.service_disabled
        quota_project = getattr(cloud.credentials, "quota_project_id", None) or cloud.project
        return Check(
            "prices",
            False,
            f"the Cloud Billing API can't be read ({why[:160]}): prices come from tfrig's table of "
            f"{gceprice.table().as_of}",
            fix=f"`gcloud services enable cloudbilling.googleapis.com --project {quota_project}`" if disabled else "",
            blocking=False,
        )
    return Check("prices", True, "live list prices from the Cloud Billing Catalog API")


def _permissions(c: Any, cloud: Any) -> list[Check]:
    from tfrig.gce.cloud import ApiError

    wanted = list(PERMISSIONS)
    account = c.config.gcp.service_account or "default"
    if account != "none":
        wanted.append(ACT_AS)
    try:
        granted = set(cloud.granted(wanted))
    except ApiError as exc:
        return [Check("permissions", False, f"could not be tested ({exc.message})", blocking=False)]
    missing = [p for p in wanted if p not in granted]
    stopping = [p for p in missing if PERMISSIONS.get(p)]
    if stopping:
        return [
            Check(
                "permissions",
                False,
                f"missing {', '.join(missing)}",
                fix="ask for roles/compute.instanceAdmin.v1 on the project",
            )
        ]
    if missing:
        said = ", ".join(missing)
        if ACT_AS in missing:
            said += " (actAs may still be granted on the service account itself)"
        return [Check("permissions", False, f"missing {said}; tfrig works around them", blocking=False)]
    return [Check("permissions", True, f"all {len(wanted)} that tfrig uses")]


def _policies(c: Any, cloud: Any) -> tuple[dict[str, Any], list[Check]]:
    """The policies in force, and a check for each against tfrig's settings (unreadable: said)."""
    from tfrig.gce.cloud import ApiError

    gcp = c.config.gcp
    found: dict[str, Any] = {}
    for constraint in POLICIES:
        try:
            found[constraint] = cloud.effective_policy(constraint)
        except ApiError as exc:
            return {}, [
                Check(
                    "policies",
                    False,
                    f"the organization policies could not be read ({exc.message}): not checked",
                    fix="ask for roles/orgpolicy.policyViewer, or ask your admin which constraints apply",
                    blocking=False,
                )
            ]
    checks = []
    if found["compute.requireOsLogin"].enforced:
        metadata_mode = gcp.ssh_mode == "metadata"
        checks.append(
            Check(
                "policy requireOsLogin",
                not metadata_mode,
                "OS Login is required" + (": gcp.ssh_mode metadata turns it off" if metadata_mode else ""),
                fix="set gcp.ssh_mode: auto" if metadata_mode else "",
            )
        )
    ip_policy = found["compute.vmExternalIpAccess"]
    if ip_policy.deny_all or ip_policy.allowed:
        problems = ["gcp.external_ip is on"] if gcp.external_ip else []
        if gcp.ssh_via == "external":
            problems.append("gcp.ssh_via external needs one")
        checks.append(
            Check(
                "policy vmExternalIpAccess",
                not problems,
                "no external IPs" + (f" ({' and '.join(problems)})" if problems else f", reached by {gcp.ssh_via}"),
                fix="set gcp.external_ip: false and gcp.ssh_via: iap (or internal, inside the VPC)",
            )
        )
    image = machine_image(gcp.image, gcp.machine_type or None)
    image_project = image_source(c, image)[0].split("/")[1]
    if found["compute.disableGuestAttributesAccess"].enforced:
        ubuntu = image_project != "debian-cloud"
        checks.append(
            Check(
                "policy disableGuestAttributesAccess",
                ubuntu,
                "guest attributes are off: host keys come from the VM's serial console"
                + ("" if ubuntu else f", which {image} does not print them on"),
                fix="" if ubuntu else "set gcp.image: ubuntu-24.04 (cloud-init prints the keys there)",
            )
        )
    if found["compute.requireShieldedVm"].enforced:
        checks.append(
            Check(
                "policy requireShieldedVm",
                bool(gcp.secure_boot),
                "Shielded VMs with Secure Boot are required; the NVIDIA driver must then be signed",
                fix="" if gcp.secure_boot else "set gcp.secure_boot: true",
            )
        )
    images = found["compute.trustedImageProjects"]
    if images.deny_all or images.allowed:
        allowed = not images.deny_all and f"projects/{image_project}" in images.allowed
        checks.append(
            Check(
                "policy trustedImageProjects",
                allowed,
                f"boot images only from {', '.join(images.allowed) or 'no project'}; gcp.image is from {image_project}",
                fix="" if allowed else "set gcp.image to an image from one of those projects",
            )
        )
    if not checks:
        checks.append(Check("policies", True, "none of the constraints tfrig meets is enforced"))
    return found, checks


def _oslogin(
    c: Any, cloud: Any, metadata: dict[str, str], policies: dict[str, Any], account: str | None
) -> list[Check]:
    from tfrig.gce.cloud import ApiError

    mode = c.config.gcp.ssh_mode
    project_on = metadata.get("enable-oslogin", "").upper() == "TRUE"
    required = "compute.requireOsLogin" in policies and policies["compute.requireOsLogin"].enforced
    if not (mode == "oslogin" or (mode == "auto" and project_on) or required):
        return [Check("login", True, "a key in the VM's metadata (OS Login is not on in the project)")]
    if metadata.get("enable-oslogin-2fa", "").upper() == "TRUE":
        return [
            Check(
                "login",
                False,
                "OS Login asks for two-factor login (enable-oslogin-2fa), which a script can't answer",
                fix="ask your admin for a project without it",
            )
        ]
    if not account:
        return [Check("login", False, "OS Login needs your account's email", fix="`gcloud config set account EMAIL`")]
    try:
        user = cloud.login_profile_user(account)
    except ApiError as exc:
        if exc.service_disabled:
            return [
                Check(
                    "login",
                    False,
                    "the OS Login API is not enabled",
                    fix=f"`gcloud services enable oslogin.googleapis.com --project {cloud.project}`",
                )
            ]
        return [Check("login", False, f"OS Login: {exc.message}", fix="ask for roles/compute.osAdminLogin")]
    said = f"logs in as {user}" if user else "no POSIX account yet (made at the first key import)"
    return [Check("login", True, f"OS Login as {account}: {said}; sudo needs roles/compute.osAdminLogin")]


def _ssh_route(c: Any, cloud: Any) -> list[Check]:
    from tfrig.gce.cloud import ApiError

    gcp = c.config.gcp
    network = gceplan.network_choice(gcp.network, gcp.subnet, bool(gcp.external_ip), gcp.tags)
    via = gcp.ssh_via
    checks = []
    if via == "iap" and not targets.has_gcloud():
        checks.append(
            Check(
                "ssh_route",
                False,
                "gcp.ssh_via iap runs `gcloud compute start-iap-tunnel`; gcloud is not on PATH",
                fix="install the Google Cloud CLI (cloud.google.com/sdk/docs/install)",
            )
        )
    if network.project not in (None, cloud.project) or not network.name:
        return [*checks, Check("firewall", True, f"the network is in project {network.project}: not checked")]
    if not cloud.has_network(network.name):
        return [
            *checks,
            Check(
                "network",
                False,
                f"project {cloud.project} has no network named {network.name}",
                fix="set gcp.network (and gcp.subnet) to one it has",
            ),
        ]
    if via == "internal":
        return [*checks, Check("firewall", True, f"SSH to internal addresses on {network.name}: not checked")]
    try:
        verdict, _ = cloud.ssh_access(network.name, network.tags, iap=via == "iap")
    except ApiError as exc:
        return [*checks, Check("firewall", False, f"could not be read ({exc.message})", blocking=False)]
    source = f"from IAP's range {gceplan.IAP_RANGE}" if via == "iap" else "from the internet"
    rule = f" --source-ranges {gceplan.IAP_RANGE}" if via == "iap" else ""
    return [
        *checks,
        Check(
            "firewall",
            verdict == "open" or verdict.startswith("from "),
            f"SSH (tcp:22) {source} on {network.name}: {verdict}",
            fix=f"`gcloud compute firewall-rules create allow-ssh --network {network.name} --allow tcp:22{rule}`",
        ),
    ]
