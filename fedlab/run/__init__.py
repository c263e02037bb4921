"""One run: the experiment plan, the round loop, client inputs, evaluation, the centralized baseline, the data tour, interrupts."""
