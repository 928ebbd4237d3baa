"""What runs and registered versions call things: artifact paths and tag names.

Training writes them (``models.tracking``), the registry, the gate and serving read them: one spelling.
"""

MODEL_ARTIFACT = "model"  # the logged model's name in its run
KERAS_FILE_IN_MODEL = "data/model.keras"  # where the keras flavor puts the native file in the model folder
DATASET_META_ARTIFACT = "dataset_meta.json"  # the prepared data's meta (classes, input shape, scaling)
SHA256_TAG = "model_sha256"  # on the run and the version: the .keras file's sha256
DATA_MD5_TAG = "data_md5"  # JSON {dvc out path: md5} of the data the version was trained on
GATE_PASSED_TAG = "gate.passed"
GATE_REPORT_TAG = "gate.report"
