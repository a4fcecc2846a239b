"""Task bundles, bases and whole networks on disk and on the Hub: the format (:mod:`.schema`), save
(:mod:`.saving`), read (:mod:`.reading`), swap into a live network (:mod:`.swap`), whole networks
(:mod:`.networks`), list and inspect (:mod:`.catalog`), Hub push and pull (:mod:`.publish`), model
cards (:mod:`.cards`), base fingerprints (:mod:`.fingerprint`), crash-safe writes (:mod:`.atomic`);
the Hub transport (:mod:`._hub`) and checked file reads (:mod:`._files`) are private to it.
:mod:`.bundle` gathers the public names. :mod:`.methods` holds the save/load methods of
``UnfoldedNetwork`` and imports the rest only when one runs, so this package imports nothing here.
"""
