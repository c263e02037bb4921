"""Process-level settings: glibc malloc arenas, scratch directories owned by one live process."""
