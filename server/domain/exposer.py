"""Names the lifecycle modules imported from here before they imported the modules the names
moved to (helper dlife's branch does): once that is merged nothing imports this, and it goes.
The create flow is server.domain.create."""

from server.domain.errors import BadRequest, DeploymentNotFound, DeploymentUnusable, RequestError
from server.domain.outcomes import Outcome, RuleResult
from server.domain.requests import check_target
from server.domain.settings import Settings
from server.domain.spans import describe_rule_span

__all__ = [
    "BadRequest",
    "DeploymentNotFound",
    "DeploymentUnusable",
    "Outcome",
    "RequestError",
    "RuleResult",
    "Settings",
    "check_target",
    "describe_rule_span",
]
