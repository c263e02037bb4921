"""`data.num_clients` on a source with its own population (LEAF, EMNIST, folders): the first N clients by id, and a
notice when the source has fewer than asked (no TensorFlow here)."""


def first_clients(client_ids, num_clients: int | None, *, source: str, what: str = 'clients') -> list:
    """The first `num_clients` of `client_ids` (all of them for None). Asking for more than there are keeps them all
    and says so in one line: a researcher who asked for 10 clients must not find 5 in the results unannounced."""
    client_ids = list(client_ids)
    if num_clients is None:
        return client_ids
    if num_clients > len(client_ids):
        print(f'{source}: data.num_clients={num_clients}, but there are only {len(client_ids)} {what}: '
              f'using all {len(client_ids)}')
    return client_ids[:num_clients]
