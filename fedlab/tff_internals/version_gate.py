"""The one version gate of fedlab's TFF internals: the TFF (and TensorFlow) they are written against, and whether
the installed one is it.

Every module of fedlab.tff_internals reaches into TFF's private modules or attributes, which change between TFF
releases without notice, so each asks `supported()` before it does. When the answer is no, each optimisation
falls back to TFF's public API (what each does instead is in its module's docstring), and one warning line per
process names both versions.

The installed version is read from `tensorflow_federated.__version__` (importing TFF, so only inside functions:
importing this module stays cheap). Reading it again is one attribute lookup; the verdict, and its warning, are
kept per version read, so the warning comes once per process. `forget()` clears them, for tests that patch
`tensorflow_federated.__version__`.
"""

import logging
import threading

SUPPORTED_TFF = '0.87.0'  # the TFF whose internals fedlab.tff_internals uses
SUPPORTED_TF_PREFIX = '2.14.'  # the TensorFlow (Keras 2.14) whose metric variables keras_forward_pass reads

log = logging.getLogger(__name__)

_verdicts: dict[str, bool] = {}  # installed TFF version -> supported
_lock = threading.Lock()  # TFF calls come from several threads (runtime=remote): one warning still


def installed_tff() -> str:
    """The installed TFF's version, as the gate reads it."""
    import tensorflow_federated as tff

    return tff.__version__


def supported() -> bool:
    """Whether the installed TFF is SUPPORTED_TFF. The first False in a process logs one warning naming both."""
    version = installed_tff()
    verdict = _verdicts.get(version)
    if verdict is None:
        with _lock:
            if version not in _verdicts:
                _verdicts[version] = version == SUPPORTED_TFF
                if not _verdicts[version]:
                    log.warning(
                        "TFF %s is installed, not %s: fedlab's internal optimisations are off (resident state, in-place "
                        'serialization, plain-op forward pass, worker session and intra_op_threads) and the run uses '
                        "TFF's public API",
                        version,
                        SUPPORTED_TFF,
                    )
            verdict = _verdicts[version]
    return verdict


def keras_supported() -> bool:
    """`supported()`, and the installed TensorFlow is SUPPORTED_TF_PREFIX (Keras' metric variables, for the forward
    pass)."""
    if not supported():
        return False
    import tensorflow as tf

    return tf.__version__.startswith(SUPPORTED_TF_PREFIX)


def forget() -> None:
    """Forgets the verdicts and that the warning was given: the next `supported()` reads the version afresh and
    warns again if it is not SUPPORTED_TFF. For tests that patch `tensorflow_federated.__version__`."""
    with _lock:
        _verdicts.clear()
