"""ecs-observer: AWS ECS task state changes of Prefect flow runs, forwarded as Prefect events."""

from ._ecs_event import Ignored, Rejected, TaskStateChange, decode
from ._observer import Observer, ObserverConfig
from ._settings import Settings
from ._translate import NotPrefects, PrefectEvent, translate

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
