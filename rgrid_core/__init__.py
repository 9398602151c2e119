"""Names and rules shared by the client (`rgrid`), the control plane (`rgrid_service`) and the
worker side (`rgrid_runner`). It sits at the bottom: it imports nothing of theirs, and they import
it, so a status, a worker state or a label is written once."""
