"""EEG data pipeline: TUH EDF reading, preprocessing into 5 s windows, an on-disk window cache,
a PyTorch dataset over it, a generic path for other corpora, and a synthetic TUAB-format corpus.

Modules (import what you need; nothing heavy is imported here):

- ``channels``   electrode names, label normalisation, the TCP bipolar montage
- ``edf_reader`` TUH-style EDF -> referential microvolts, sampling rate, age
- ``preprocess`` filters, 256 Hz, montage, windows, normalisation (``lumamba.normalise``; pure array functions)
- ``tuab``       the TUAB v3 tree: files, labels, subjects, subject-disjoint splits
- ``cache``      parallel, resumable, atomic preprocessing into a window cache
- ``generic``    arrays or EDF files of any corpus and montage -> the same windows / cache
- ``importer``   ``lumamba-data import``: a CSV table + arrays or EDF files, checked up front
- ``dataset``    ``WindowDataset`` over a cache (train / val / test)
- ``synth``      the synthetic TUAB-format corpus (``lumamba-data synth``)
- ``baseline``   log band-power + logistic-regression AUROC of a cache
- ``cli``        the ``lumamba-data`` command
"""
