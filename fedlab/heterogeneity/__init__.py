"""System heterogeneity on a simulated clock: devices (devices), the rounds' outcomes and time (clock), the `system`
config group (settings). docs/heterogeneity.md."""
