"""The guardrail's own identity: whose tamper-shaped events are its own work, not tamper.

"Own" is pinned, never a name glob across accounts (DESIGN.md, "The guardrail's own changes are
not tamper"):

- in the home (security) account, exactly its Lambda roles: `arn:<partition>:iam::<home>:role/<name>`
  for the names in `GUARDRAIL_OWN_ROLE_NAMES`;
- in a member account, exactly that account's `GuardrailRemediationRole`, and only for sessions
  named as the guardrail names them when it assumes the role (`REMEDIATION_SESSION_NAME`);
- where the role's id (`AROA...`) is known, the event's `sessionIssuer.principalId` must equal it:
  a role deleted and re-created under the same name has a new id;
- `GUARDRAIL_OWN_ROLE_ARNS`: an explicit override of exact ARNs (no wildcards).

The object is pure: the home account and the known role ids come from callables the runtime
backs with its per-container caches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib.arns import parse_principal_arn
from chalicelib.constants import DEFAULT_REMEDIATION_ROLE, REMEDIATION_SESSION_NAME
from chalicelib.events import Actor

if TYPE_CHECKING:
    from chalicelib.settings import Settings

#: (account, role name) -> the role's id when the guardrail has learned it, else "".
RoleIdLookup = Callable[[str, str], str]


def _unknown(account: str, role_name: str) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class OwnIdentity:
    """Decides whether an event's actor is the guardrail itself."""

    home_account: str | Callable[[], str]
    role_names: frozenset[str] = frozenset()
    remediation_role: str = DEFAULT_REMEDIATION_ROLE
    session_name: str = REMEDIATION_SESSION_NAME
    exact_arns: frozenset[str] = frozenset()
    known_role_id: RoleIdLookup = _unknown

    @classmethod
    def pinned(
        cls,
        home_account: str | Callable[[], str],
        role_names: Iterable[str] = (),
        *,
        remediation_role: str = DEFAULT_REMEDIATION_ROLE,
        exact_arns: Iterable[str] = (),
        known_role_id: RoleIdLookup = _unknown,
    ) -> OwnIdentity:
        return cls(
            home_account=home_account,
            role_names=frozenset(role_names),
            remediation_role=remediation_role,
            exact_arns=frozenset(exact_arns),
            known_role_id=known_role_id,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        home_account: str | Callable[[], str] | None = None,
        known_role_id: RoleIdLookup = _unknown,
    ) -> OwnIdentity:
        """`GUARDRAIL_OWN_ROLE_NAMES`, `GUARDRAIL_REMEDIATION_ROLE` and `GUARDRAIL_OWN_ROLE_ARNS`."""
        return cls.pinned(
            settings.home_account if home_account is None else home_account,
            settings.own_role_names,
            remediation_role=settings.remediation_role,
            exact_arns=settings.own_roles,
            known_role_id=known_role_id,
        )

    def home(self) -> str:
        return self.home_account() if callable(self.home_account) else self.home_account

    def is_own(self, actor: Actor, event_account: str) -> bool:
        """True only for the guardrail's own roles (and sessions) in the event's account."""
        principal = actor.principal_arn
        if principal and principal in self.exact_arns:
            return True
        role = parse_principal_arn(actor.session_issuer_arn) if actor.type == "AssumedRole" else None
        if role is None or role.type != "role" or role.path or role.account != event_account:
            return False
        if event_account == self.home():
            if role.name not in self.role_names:
                return False
        elif role.name != self.remediation_role or actor.session_name != self.session_name:
            return False
        known = self.known_role_id(event_account, role.name)
        return not known or known == actor.role_id
