"""Model images: names, trusted records, filesystem images, packing, verified access."""
