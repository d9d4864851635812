"""The daemon process and its surfaces: wiring, control socket, HTTP, systemd notify, status."""
