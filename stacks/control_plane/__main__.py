"""Entry point of the root Pulumi project (Pulumi.yaml `main: stacks/control_plane`)."""
from stacks.control_plane import main

main()
