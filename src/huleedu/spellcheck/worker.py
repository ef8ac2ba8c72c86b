"""Everything spellcheck consumes, at one glance: topic -> event model -> handler."""

from functools import partial
from typing import Any

from huleedu.contracts.events import SpellcheckRequestedV1
from huleedu.messaging.consumer import Route
from huleedu.spellcheck import handlers
from huleedu.spellcheck.handlers import Deps

SERVICE = "spellcheck"
CONSUMER_GROUP = "spellcheck"
SERVICE_ID = "huleedu-spellcheck"  # our X-Service-ID towards the content store


def routes(deps: Deps) -> list[Route[Any]]:
    return [
        Route(
            deps.topics.spellcheck_requested, SpellcheckRequestedV1, partial(handlers.check_essays, deps=deps)
        )
    ]
