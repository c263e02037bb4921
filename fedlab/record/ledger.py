"""Communication ledger: the bits a TFF process sends each round, read from the computation it will run.

`measure` walks the process's computation through TFF's public API (`tff.framework`'s building blocks and
preorder walk, `tff`'s types and placements), so it needs no TFF internals. If that walk fails on another TFF than
fedlab.tff_internals.version_gate's (its public API may have moved), the cost says it was not counted and why, in
the run's one communication line, and the ledger's columns stay empty; on the gate's TFF a failure is raised.
"""

import dataclasses
import logging

import numpy as np

log = logging.getLogger(__name__)

# The per-round columns the ledger adds to metrics.csv (and, per client and in total, to TensorBoard).
COLUMNS = (
    'downlink_bits_per_client',
    'uplink_bits_per_client',
    'downlink_bits',
    'uplink_bits',
    'cumulative_downlink_bits',
    'cumulative_uplink_bits',
)
DOWNLINK = 'downlink'  # server -> clients
UPLINK = 'uplink'  # clients -> server

# tff.aggregators.EncodedSumFactory (the compression aggregator's core) reduces encoded values with this
# intrinsic; the plain sum/mean aggregators use federated_sum.
_ENCODED_REDUCTION = 'federated_aggregate'


@dataclasses.dataclass(frozen=True)
class Transfer:
    """One intrinsic call of the process that moves data between placements."""

    intrinsic: str  # e.g. federated_broadcast, federated_sum, federated_aggregate
    direction: str  # DOWNLINK or UPLINK
    bits_per_client: int
    value_type: str  # the TFF type of what each client receives or sends


@dataclasses.dataclass(frozen=True)
class CommunicationCost:
    """What one round of a process transmits per participating client, and what the update would be raw."""

    transfers: tuple[Transfer, ...]
    raw_update_bits: int  # the model's trainable weights at their own dtypes: an uncompressed update
    largest_update_tensor: int  # elements in the largest trainable tensor
    not_counted: str | None = None  # why the process could not be read (None: counted)

    @classmethod
    def uncounted(cls, why: str) -> 'CommunicationCost':
        return cls(transfers=(), raw_update_bits=0, largest_update_tensor=0, not_counted=why)

    @property
    def counted(self) -> bool:
        return self.not_counted is None

    def bits_per_client(self, direction: str) -> int:
        return sum(t.bits_per_client for t in self.transfers if t.direction == direction)

    @property
    def uplink_ratio(self) -> float:
        """raw update bits / uplink bits: how many times smaller than float32 weights the upload is."""
        return self.raw_update_bits / self.bits_per_client(UPLINK)

    @property
    def encodes_update(self) -> bool:
        return any(t.intrinsic == _ENCODED_REDUCTION for t in self.transfers if t.direction == UPLINK)

    def summary(self) -> dict:
        """The JSON form, for results.json."""
        if not self.counted:
            return {'not_counted': self.not_counted}
        return {
            'downlink_bits_per_client': self.bits_per_client(DOWNLINK),
            'uplink_bits_per_client': self.bits_per_client(UPLINK),
            'raw_update_bits': self.raw_update_bits,
            'uplink_ratio': round(self.uplink_ratio, 4),
            'transfers': [dataclasses.asdict(t) for t in self.transfers],
        }


def type_bits(type_spec) -> int:
    """Bits of a TFF type's value: elements x dtype width, summed over every tensor (placements see through)."""
    import tensorflow_federated as tff

    if isinstance(type_spec, tff.TensorType):
        if type_spec.shape is None or any(d is None for d in type_spec.shape):
            raise ValueError(f'cannot count the bits of a tensor of unknown shape: {type_spec}')
        return int(np.prod(type_spec.shape, dtype=np.int64)) * np.dtype(type_spec.dtype).itemsize * 8
    if isinstance(type_spec, tff.FederatedType):
        return type_bits(type_spec.member)
    if isinstance(type_spec, tff.StructType):
        return sum(type_bits(member) for member in type_spec.children())
    raise ValueError(f'cannot count the bits of {type_spec}')


def _placed_parts(type_spec, placement) -> list:
    """The members of a (possibly nested struct) type that are placed at `placement`."""
    import tensorflow_federated as tff

    if isinstance(type_spec, tff.FederatedType):
        return [type_spec] if type_spec.placement is placement else []
    if isinstance(type_spec, tff.StructType):
        return [part for member in type_spec.children() for part in _placed_parts(member, placement)]
    return []


def measure(process) -> CommunicationCost:
    """Reads every intrinsic in `process.next` and counts what crosses between server and clients.

    An intrinsic whose result is at the clients carries its server-placed arguments down (federated_broadcast);
    one whose result is at the server carries its client-placed arguments up (federated_sum, _mean,
    _aggregate, secure sums). The argument types are what is actually sent: for an encoding aggregator they
    are the encoded tensors (e.g. 8-bit values bit-packed into int32), so any model or aggregator is counted
    from its own types. Intrinsics that stay in one placement (federated_map, _zip, _apply) move nothing.

    On another TFF than the version gate's, a walk that fails returns `CommunicationCost.uncounted(why)`.
    """
    try:
        return _measure(process)
    except Exception as error:
        from fedlab.tff_internals import version_gate

        if version_gate.supported():
            raise
        first_line = (str(error).strip().splitlines() or [''])[0]
        return CommunicationCost.uncounted(
            f"TFF {version_gate.installed_tff()}'s public API did not let fedlab read the process "
            f'({type(error).__name__}: {first_line})'
        )


def _measure(process) -> CommunicationCost:
    import tensorflow_federated as tff

    transfers = []

    def visit(block):
        if isinstance(block, tff.framework.Intrinsic):
            transfer = _transfer(block)
            if transfer is not None:
                transfers.append(transfer)
        return block, False  # a walk: nothing is transformed

    # A process whose clients return their outputs to Python (FedBuff) names the computation that reaches them and
    # the type each client sends back, which no intrinsic carries.
    tff.framework.transform_preorder(getattr(process, 'client_computation', process.next).to_building_block(), visit)
    client_outputs = getattr(process, 'client_outputs_type', None)
    if client_outputs is not None:
        transfers.append(Transfer(intrinsic='client output', direction=UPLINK,
                                  bits_per_client=type_bits(client_outputs), value_type=str(client_outputs)))
    weights_type = getattr(process, 'model_weights_type', None) or process.get_model_weights.type_signature.result
    trainable = weights_type.trainable
    return CommunicationCost(
        transfers=tuple(transfers),
        raw_update_bits=type_bits(trainable),
        largest_update_tensor=max(int(np.prod(t.shape, dtype=np.int64)) for t in trainable.children()),
    )


def _transfer(intrinsic) -> Transfer | None:
    """What one intrinsic call moves between placements (None: nothing)."""
    import tensorflow_federated as tff

    signature = intrinsic.type_signature
    if not isinstance(signature, tff.FunctionType) or signature.parameter is None:
        return None
    result = signature.result
    if not isinstance(result, tff.FederatedType):
        return None
    source, direction = (tff.SERVER, DOWNLINK) if result.placement is tff.CLIENTS else (tff.CLIENTS, UPLINK)
    parts = _placed_parts(signature.parameter, source)
    bits = sum(type_bits(p) for p in parts)
    if not bits:  # e.g. an encoder's empty params struct moves nothing
        return None
    value_type = parts[0] if len(parts) == 1 else tff.StructType(parts)
    return Transfer(intrinsic=intrinsic.uri, direction=direction, bits_per_client=bits, value_type=str(value_type))


def warn_if_compression_is_idle(cost: CommunicationCost, *, threshold: float = 1.05) -> bool:
    """Logs one warning when the process encodes its update but the upload is no smaller than raw weights."""
    if not cost.encodes_update or cost.uplink_ratio >= threshold:
        return False
    log.warning(
        'compression does nothing for this model: its update is encoded but the upload is %.2fx the raw '
        'float32 update (%s vs %s bits per client); no tensor is large enough to be quantized (largest: %s '
        'elements; tff.learning.compression_aggregator quantizes only tensors with more than 20,000)',
        cost.uplink_ratio,
        f'{cost.bits_per_client(UPLINK):,}',
        f'{cost.raw_update_bits:,}',
        f'{cost.largest_update_tensor:,}',
    )
    return True


class Ledger:
    """Running totals: per round, bits per client and in total for the clients that took part, and cumulative.

    One of the run's per-round annotators (see recorder.RoundAnnotator): its COLUMNS go into metrics.csv and, as
    they are not metrics, into a TensorBoard run of their own.
    """

    tensorboard_run = 'communication'
    columns = COLUMNS

    def __init__(self, cost: CommunicationCost):
        self.cost = cost
        self.cumulative_downlink_bits = 0
        self.cumulative_uplink_bits = 0
        self._downloads = self._uploads = None

    def count_downloads(self, downloads) -> None:
        """`downloads(round_num)`: how many clients received the model in a round, when more than train (a simulated
        system's late, dropped and over-selected clients download it too); by default, the clients that train."""
        self._downloads = downloads

    def count_uploads(self, uploads) -> None:
        """`uploads(round_num)`: how many clients' uploads a round receives, when not the clients that start in it
        (FedBuff: the updates it applies); by default, the clients that train."""
        self._uploads = uploads

    def round_values(self, round_num: int, client_ids: list[str]) -> dict[str, int | str]:
        """The round's COLUMNS, for its participants (and the clients that only downloaded, see `count_downloads`);
        advances the cumulative totals. Empty if not counted. Every round of a process sends the same per client."""
        if not self.cost.counted:
            return dict.fromkeys(COLUMNS, '')
        clients = len(client_ids) if self._uploads is None else self._uploads(round_num)
        receivers = len(client_ids) if self._downloads is None else self._downloads(round_num)
        downlink = self.cost.bits_per_client(DOWNLINK)
        uplink = self.cost.bits_per_client(UPLINK)
        self.cumulative_downlink_bits += downlink * receivers
        self.cumulative_uplink_bits += uplink * clients
        return {
            'downlink_bits_per_client': downlink,
            'uplink_bits_per_client': uplink,
            'downlink_bits': downlink * receivers,
            'uplink_bits': uplink * clients,
            'cumulative_downlink_bits': self.cumulative_downlink_bits,
            'cumulative_uplink_bits': self.cumulative_uplink_bits,
        }

    def restore(self, row: dict[str, str] | None) -> None:
        """Takes the cumulative totals from the metrics.csv row of the last recorded round (None: no round yet)."""
        row = row or {}
        self.cumulative_downlink_bits = int(row.get('cumulative_downlink_bits') or 0)
        self.cumulative_uplink_bits = int(row.get('cumulative_uplink_bits') or 0)

    def summary(self) -> dict:
        """results.json's `communication`: per-client costs, every transfer and the cumulative totals (not counted:
        why)."""
        if not self.cost.counted:
            return self.cost.summary()
        return {
            **self.cost.summary(),
            'cumulative_downlink_bits': self.cumulative_downlink_bits,
            'cumulative_uplink_bits': self.cumulative_uplink_bits,
        }

    def describe(self) -> str:
        """One line for the console: the per-client cost of a round, or why it is not counted."""
        if not self.cost.counted:
            return f'communication per client and round: not counted: {self.cost.not_counted}'
        return (
            f'communication per client and round: downlink {_mib(self.cost.bits_per_client(DOWNLINK))}, '
            f'uplink {_mib(self.cost.bits_per_client(UPLINK))} '
            f'(raw float32 update ÷ uplink: {self.cost.uplink_ratio:.2f}; above 1 means compressed)'
        )


def _mib(bits: int) -> str:
    return f'{bits:,} bits ({bits / 8 / 2**20:.3f} MiB)'
