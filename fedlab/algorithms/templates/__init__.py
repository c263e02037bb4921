"""The parts every algorithm is composed from: the local-training loop, client work, composition, the packed round."""
