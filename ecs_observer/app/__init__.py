"""The application shell: settings, assembly of the service, the commands, health, the demo."""
