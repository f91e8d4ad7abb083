"""Fine-tuning the real MobileNet v1 on the bundled example photos, through the command line (kept short)."""
import json
import re

import pytest

from tests.conftest import PROJECT
from tests.test_cli import run_script

pytestmark = pytest.mark.integration
EXAMPLES = PROJECT / "examples" / "flower_photos"


def test_fine_tuning_the_real_mobilenet_gives_a_graph_label_image_reads(tmp_path):
    graph = tmp_path / "graph.pb"
    result = run_script("scripts.retrain", "--image_dir", str(EXAMPLES), "--output_graph", str(graph),
                        "--output_labels", str(tmp_path / "labels.txt"), "--summaries_dir", str(tmp_path / "logs"),
                        "--bottleneck_dir", str(tmp_path / "bn"), "--how_many_training_steps", "200",
                        "--fine_tune_blocks", "1", "--fine_tune_steps", "4", "--augment_copies", "1",
                        "--random_seed", "0", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    # 7x7x1024 float16 activations per image and view: 98 KiB
    assert re.search(r"Cache: \d+ rows of 50176 float16 values", result.stdout)
    assert "Fine-tune step 4/4" in result.stdout
    assert json.loads(graph.with_suffix(".json").read_text())["fine_tuned_blocks"] == 1
    photo = next((EXAMPLES / "roses").glob("*.jpg"))
    labelled = run_script("scripts.label_image", "--graph", str(graph), "--image", str(photo))
    assert labelled.returncode == 0, labelled.stderr[-2000:]
    assert len(labelled.stdout.strip().splitlines()) >= 5
