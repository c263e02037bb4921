"""fedlab's faster client paths: blocks of rounds, packed clients, shard files and tensor inputs."""
