"""Which accounts the sweep visits: AWS Organizations, explicit lists, exclusions.

The security account reads `organizations:ListAccounts` when it is the management account or a
delegated administrator. `GUARDRAIL_ORG_DISCOVERY=auto` (the default) uses the organization when
it is readable and falls back to the explicit list when it is not; `true` makes an unreadable
organization an error the sweep reports; `false` never asks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.iam import error_code

log = logging.getLogger(__name__)

#: Answers that mean "no organization to read here", not a failure, in auto mode.
NOT_READABLE = frozenset({"AWSOrganizationsNotInUseException", "AccessDeniedException", "AccessDenied"})


class DiscoveryError(RuntimeError):
    """The organization could not be listed."""


@dataclass
class AccountPlan:
    """The accounts to sweep, home first, and what the discovery said on the way."""

    accounts: list[str] = field(default_factory=list)
    discovered: bool = False
    errors: list[str] = field(default_factory=list)


class Organization:
    """Reads the organization's member accounts through an `organizations` client."""

    def __init__(self, client: Any) -> None:
        self._org = client

    def active_accounts(self) -> list[str]:
        """Every ACTIVE account of the organization (paginated); raises DiscoveryError."""
        found: list[str] = []
        try:
            for page in self._org.get_paginator("list_accounts").paginate():
                found += [a["Id"] for a in page.get("Accounts", []) if a.get("Status") == "ACTIVE"]
        except (ClientError, BotoCoreError) as exc:
            raise DiscoveryError(f"organizations:ListAccounts failed: {error_code(exc)}") from None
        return found


def plan_accounts(
    *,
    home: str,
    discovery: str,
    organization: Organization | None,
    explicit: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> AccountPlan:
    """Home, then the organization's active accounts and the explicit ones, minus the excluded.

    The home account is always swept: excluding it would hide the security account itself.
    """
    plan = AccountPlan()
    members: list[str] = []
    if discovery != "false" and organization is not None:
        try:
            members = organization.active_accounts()
            if not members:  # an organization lists at least its management account
                raise DiscoveryError("organizations:ListAccounts listed no account: AWSOrganizationsNotInUseException")
            plan.discovered = True
        except DiscoveryError as exc:
            code = str(exc).rsplit(": ", 1)[-1]
            if discovery == "true" or code not in NOT_READABLE:
                plan.errors.append(str(exc))
            log.debug("organization not read (%s); sweeping the explicit list", code)
    excluded = set(exclude)
    seen = {home}
    plan.accounts = [home]
    for account in [*members, *explicit]:
        if account not in seen and account not in excluded:
            seen.add(account)
            plan.accounts.append(account)
    return plan
