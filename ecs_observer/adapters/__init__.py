"""The adapters: each implements a port (`ecs_observer.ports`) over one outside system."""
