"""The wheel ships every fedlab package and the configs (make wheel-check installs and runs it)."""

import tomllib

from tests.conftest import REPO


def test_every_package_directory_is_declared():
    setuptools = tomllib.loads((REPO / 'pyproject.toml').read_text())['tool']['setuptools']
    on_disk = {
        '.'.join(path.parent.relative_to(REPO).parts) for path in (REPO / 'fedlab').rglob('__init__.py')
    }
    assert on_disk | {'fedlab.conf'} == set(setuptools['packages'])
    assert setuptools['package-dir']['fedlab.conf'] == 'conf'
