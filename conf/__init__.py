"""fedlab's config groups; importing this package (Hydra does, to read it) registers the typed schema."""

from fedlab import schema

schema.register()
