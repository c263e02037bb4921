"""fedlab's config groups; importing this package (Hydra does, to read it) registers the typed schema."""

from fedlab.config import schema

schema.register()
