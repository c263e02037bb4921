"""Start-up (issue 26): `fedlab --help` and `--cfg job` load only what they need, and the faster listing of Hydra's
config groups for the help prints what Hydra's own listing prints."""

from hydra import initialize_config_module
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra

from fedlab.config import hydra_help
from tests.conftest import modules_loaded_by


def test_the_cli_module_loads_neither_numpy_nor_asyncio():
    # numpy (~0.2 s) and asyncio (~0.1 s) are imported where a run needs them, not when the command starts.
    assert modules_loaded_by('import fedlab.cli', roots=('numpy', 'asyncio', 'tensorflow')) == []


def test_the_help_flags_are_recognised():
    assert hydra_help.asks_for_help(['--help'])
    assert hydra_help.asks_for_help(['model=linear', '-h'])
    assert hydra_help.asks_for_help(['--hydra-help'])
    assert not hydra_help.asks_for_help(['--cfg', 'job', 'model=linear'])


def _help_groups() -> str:
    with initialize_config_module('fedlab.conf', version_base='1.3'):
        hydra = GlobalHydra.instance().hydra
        return hydra.format_config_groups(lambda group: True)


def test_one_repository_lists_the_same_groups_as_hydra(monkeypatch):
    hydra_listing = _help_groups()
    monkeypatch.setattr(ConfigLoaderImpl, 'get_group_options', ConfigLoaderImpl.get_group_options)  # undone after
    assert hydra_help.list_groups_from_one_repository()
    assert _help_groups() == hydra_listing
    assert 'model: ' in hydra_listing and 'hydra/launcher: ' in hydra_listing
