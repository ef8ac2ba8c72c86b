"""Settings, the wiring of adapters per mode, the service runner and the `huleedu` CLI."""
