"""ecs-observer: AWS ECS task state changes of Prefect flow runs, forwarded as Prefect events.

Each name loads on first use, so that `ecs-observer healthcheck` (run every 30 s
by ECS) starts with the standard library alone.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app.settings import Settings
    from .core.decision import translate
    from .core.ecs_event import Ignored, Rejected, TaskStateChange, decode
    from .core.translate import NotPrefects, PrefectEvent
    from .pipeline.observer import Observer, ObserverConfig

_WHERE = {
    "Ignored": ".core.ecs_event",
    "Rejected": ".core.ecs_event",
    "TaskStateChange": ".core.ecs_event",
    "decode": ".core.ecs_event",
    "NotPrefects": ".core.translate",
    "PrefectEvent": ".core.translate",
    "translate": ".core.decision",
    "Observer": ".pipeline.observer",
    "ObserverConfig": ".pipeline.observer",
    "Settings": ".app.settings",
}
__all__ = [
    "Ignored",
    "NotPrefects",
    "Observer",
    "ObserverConfig",
    "PrefectEvent",
    "Rejected",
    "Settings",
    "TaskStateChange",
    "decode",
    "translate",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_WHERE[name], __name__), name)
