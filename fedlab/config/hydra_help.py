"""A faster `fedlab --help`: Hydra 1.3 lists the config groups of the help text with one `get_group_options` call per
group (132 for fedlab's groups), and each call deep-copies the whole config repository (`CachingConfigRepository`)
before reading one directory listing: ~0.8 s of a 1.3 s `--help`. For the help commands only, fedlab builds that
repository once and lists every group from it; the text printed is the same (tested).

Hydra internals: checked against the version they were written for, and left alone on any other."""

import sys

HELP_FLAGS = frozenset({'--help', '-h', '--hydra-help'})
HYDRA_VERSIONS = ('1.3.',)  # ConfigLoaderImpl.get_group_options and _parse_overrides_and_create_caching_repo


def asks_for_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def list_groups_from_one_repository() -> bool:
    """Makes Hydra's group listing reuse one repository per primary config (no overrides); False if this Hydra is
    not one this was written for (then nothing changes)."""
    import hydra
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    if not hydra.__version__.startswith(HYDRA_VERSIONS):
        return False
    original = ConfigLoaderImpl.get_group_options
    repositories = {}  # (loader, config_name) -> its repository with the search path processed, as Hydra builds it

    def get_group_options(self, group_name, results_filter=ObjectType.CONFIG, config_name=None, overrides=None):
        if overrides:  # the help's listing passes none; anything else keeps Hydra's own path
            return original(self, group_name, results_filter, config_name, overrides)
        key = (id(self), config_name)
        if key not in repositories:
            repositories[key] = self._parse_overrides_and_create_caching_repo(config_name, [])[1]
        return repositories[key].get_group_options(group_name, results_filter)

    ConfigLoaderImpl.get_group_options = get_group_options
    return True


def install_for(argv: list[str] | None = None) -> None:
    """Installs the faster listing when the command line asks for help."""
    if asks_for_help(sys.argv[1:] if argv is None else argv):
        list_groups_from_one_repository()
