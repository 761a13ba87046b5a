"""The privileged activator: kernel dm-verity activation for the unprivileged appliance."""
