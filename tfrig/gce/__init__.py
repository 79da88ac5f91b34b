"""Compute Engine: the SDK adapter (`cloud`), the pure rules and prices (`plan`, `prices`), settings
(`config`), creating and deleting VMs (`provision`), reaching them (`access`) and idle stop."""
