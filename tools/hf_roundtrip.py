#!/usr/bin/env python3
"""Makes the Hugging Face exports users make, with `datasets` itself, for tests/hf_datasets.rs.

    python3 tools/hf_roundtrip.py IMAGE_FOLDER OUT

From an image folder (`train/<class>/*.jpg`, `test/<class>/*.jpg`) loaded with
`load_dataset("imagefolder")`, writes OUT/saved_dict (`DatasetDict.save_to_disk`),
OUT/saved_test (`ds["test"].save_to_disk`) and OUT/pathonly/train.parquet (`to_parquet`, whose
image structs hold the file's path and no bytes), and prints the class names as JSON.
"""
import json
import pathlib
import sys

import datasets

folder, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
datasets.disable_progress_bars()
ds = datasets.load_dataset("imagefolder", data_dir=str(folder))
ds.save_to_disk(str(out / "saved_dict"))
ds["test"].save_to_disk(str(out / "saved_test"))
ds["train"].to_parquet(str(out / "pathonly" / "train.parquet"))
print(json.dumps(ds["train"].features["label"].names))
