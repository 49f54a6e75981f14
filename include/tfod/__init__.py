"""TFOD (TF1) training checkpoints in, without TF1.

    checkpoint_index.py  a TF1 checkpoint's .index (names, dtypes, shapes, data layout), no TF
    names.py             TFOD variable names <-> the Keras detector, four variants, QAT ranges
    importer.py          check_tfod / import_tfod: a TFOD checkpoint -> a checkpoint folder
    training.py          TFOD training folders: landed steps, import a step
    identity.py          a step's identity: fingerprint (sha256 of what was read) and created
    commands.py          the `mobiledet import-tfod` verb

The TFOD pipeline.config and label map readers stay in include/convert/tfod.py.
"""
