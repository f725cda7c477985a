"""The parts of core the API process uses must not load Keras or TensorFlow."""

import subprocess
import sys


def test_specs_configs_data_loading_and_records_import_without_tensorflow():
    code = (
        "import sys\n"
        "import core.models, core.training, core.data, jobs.records, jobs.settings, jobs.queue\n"
        "import core.ranking, core.catalogue, core.inference, jobs.ids, core.models.weights\n"
        "core.training.make_config('resnet20', 'cifar10', preset='cifar-paper')\n"
        "core.models.parse_architecture('resnet50')\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
