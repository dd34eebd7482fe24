"""Throughput benchmark of the mlpulse worker against a naive Faust agent.

``python -m bench`` (or ``make bench``) starts the embedded broker, pre-fills
input topics with simulated prediction events and times, in one run:

* the mlpulse worker on batch envelopes (one message = a JSON array of 500
  events of one model),
* the mlpulse worker on single events (one event per message),
* a naive Faust agent (``json.loads`` and a per-model counter) on the same
  single-event topic: the peer the ratios are computed against.

Every case is timed from the moment its worker owns its partitions to the moment
it finished the input (mlpulse: the last expected window summary is published;
naive agent: the last message is counted). Results go to stdout as a table and
to ``bench/results/latest.json``. See :mod:`bench.__main__` for the options.
"""
