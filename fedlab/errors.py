"""The error users see: one line naming the key or file and what is allowed; the CLI exits 2."""


class FedlabError(Exception):
    """Bad input (a config value, a data file, a run directory). Raise it before writing anything."""
