"""`gpufabric`: the controller's command line.

Groups over the REST API are named in the plural (`hosts`, `pools`, `quotas`, `validations`) and `lease` for
a tenant's lease; each also answers to its other number (`host`, `leases`, ...), hidden from the help, so the
commands that came first (`gpufabric host reset-credential`, `gpufabric validate run`) keep working.
"""

from __future__ import annotations

import typer

from controller.cli import admin as _admin
from controller.cli import demo as _demo
from controller.cli import eks as _eks
from controller.cli import hosts as _hosts
from controller.cli import leases as _leases
from controller.cli import login as _login
from controller.cli import nccl as _nccl
from controller.cli import offers as _offers
from controller.cli import pools as _pools
from controller.cli import quotas as _quotas
from controller.cli import server as _server
from controller.cli import validate as _validate

app = typer.Typer(
    name="gpufabric",
    help="gpufabric: one GPU fabric over OpenStack and AWS EKS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(_server.app, name="controller")
app.add_typer(_admin.app, name="admin")
app.command("demo")(_demo.demo)
# Sub-command groups register below (one line each).
# --- sub-apps ---
app.add_typer(_eks.app, name="eks")
app.add_typer(_nccl.app, name="nccl")
# Over the REST API (controller.cli.common: --controller/--token, env, then the `gpufabric login` file).
app.command("login")(_login.login)
app.command("logout")(_login.logout)
app.command("whoami")(_login.whoami)
app.command("offers")(_offers.offers)
REST_GROUPS = (
    (_leases.app, "lease", "leases"),
    (_hosts.app, "hosts", "host"),
    (_pools.app, "pools", "pool"),
    (_quotas.app, "quotas", "quota"),
    (_validate.app, "validations", "validate"),
)
ALIASES = {alias: name for _, name, alias in REST_GROUPS}
for _group, _name, _alias in REST_GROUPS:
    app.add_typer(_group, name=_name)
    app.add_typer(_group, name=_alias, hidden=True)


def main() -> None:
    app()
