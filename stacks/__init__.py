"""Pulumi programs: `worker_pool` (the fleet's servers) and, later, `control_plane`."""
