"""--gradcam and --html on label_image, evaluate, relabel and retrain."""
import re

import numpy as np
import pytest
from PIL import Image

from retrain.cli import evaluate as evaluate_script
from retrain.cli import label_image as label_image_script
from retrain.cli import relabel as relabel_script
from retrain.errors import UserError, command_line_spelling
from retrain.label.evaluation import evaluate_folder
from retrain.pipeline import run_retrain
from tests.conftest import CLASS_COLOURS, make_image
from tests.test_cli import run_script
from tests.test_evaluate import mislabelled_dataset
from tests.test_pipeline import options
from tests.test_relabel import labeler, messy_input, tiny_graph  # noqa: F401 (module-scoped fixtures)

CARD = "<figure class='card'"


def test_label_image_writes_the_photo_with_its_heatmap(tiny_graph, tmp_path, capsys):  # noqa: F811
    photo = make_image(tmp_path / "photo.jpg", CLASS_COLOURS["red"], seed=3, size=(90, 60))
    out = tmp_path / "heat.png"
    assert label_image_script.main(["--graph", str(tiny_graph), "--image", str(photo), "--gradcam", str(out),
                                    "--gradcam_label", "blue"]) == 0
    assert f"Grad-CAM for blue: {out}" in capsys.readouterr().out
    with Image.open(out) as heat, Image.open(photo) as original:
        assert heat.size == original.size and heat.format == "PNG"
    with pytest.raises(UserError, match="--gradcam explains one image, got 2"):
        label_image_script.main(["--graph", str(tiny_graph), "--image", str(photo), str(photo), "--gradcam", str(out)])


def test_a_label_not_in_the_labels_file_gives_one_line_and_exit_code_2(tiny_graph, tmp_path):  # noqa: F811
    photo = make_image(tmp_path / "photo.jpg", CLASS_COLOURS["red"], seed=3)
    result = run_script("scripts.label_image", "--graph", str(tiny_graph), "--image", str(photo), "--gradcam",
                        str(tmp_path / "heat.png"), "--gradcam_label", "purple")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr == "error: --gradcam_label 'purple' is not in the labels file (labels: blue, green, red)\n"


@pytest.mark.parametrize("flags, message", [
    (["--gradcam_layer", "NoSuchBlock"], "--gradcam_layer 'NoSuchBlock' is not a block of this backbone"),
    (["--gradcam", "/proc/heat.png"], "--gradcam: cannot write in /proc"),
    (["--gradcam", "heat.gif"], "--gradcam heat.gif: use a .png or .jpg file name"),
])
def test_bad_gradcam_flags_are_refused(tiny_graph, tmp_path, flags, message):  # noqa: F811
    photo = make_image(tmp_path / "photo.jpg", CLASS_COLOURS["red"], seed=3)
    with pytest.raises(UserError, match=re.escape(message)), command_line_spelling():
        label_image_script.main(["--graph", str(tiny_graph), "--image", str(photo), "--gradcam",
                                 str(tmp_path / "heat.png"), *flags])


def test_evaluate_html_shows_the_images_evaluate_counts_as_wrong(tiny_graph, labeler, tmp_path, capsys):  # noqa: F811
    image_dir = mislabelled_dataset(tmp_path / "held_out")
    assert evaluate_script.main(["--graph", str(tiny_graph), "--image_dir", str(image_dir),
                                 "--html", str(tmp_path / "html")]) == 0
    assert f"HTML report: {tmp_path / 'html' / 'index.html'}" in capsys.readouterr().out
    evaluation = evaluate_folder(labeler, image_dir)
    page = (tmp_path / "html" / "index.html").read_text()
    assert page.count(CARD) == int((evaluation.truths != evaluation.predictions).sum()) > 0
    assert page.count("_gradcam.jpg") == page.count(CARD)


def test_relabel_audit_html_shows_the_suspected_mislabels(tiny_graph, tmp_path, capsys):  # noqa: F811
    source = messy_input(tmp_path / "in")
    assert relabel_script.main(["--graph", str(tiny_graph), "--image_dir", str(source), "--output_dir",
                                str(tmp_path / "sorted"), "--mode", "move", "--audit",
                                "--html", str(tmp_path / "audit")]) == 0
    suspected = int(re.search(r"(\d+) suspected mislabel", capsys.readouterr().out).group(1))
    page = (tmp_path / "audit" / "index.html").read_text()
    assert page.count(CARD) == suspected >= 1 and "misfiled_red.jpg" in page and "folder: <b>green</b>" in page
    for image in re.findall(r"src='([^']+)'", page):  # moved images are shown from where they went
        assert (tmp_path / "audit" / image).stat().st_size > 0


def test_retrain_html_reports_its_test_split_with_curves(image_dir, tmp_path, tiny_model_dir):
    for i in range(4):  # red photos filed as green: some land in the test split as mistakes
        make_image(image_dir / "green" / f"misfiled_{i}.jpg", CLASS_COLOURS["red"], seed=700 + i)
    messages = []
    result = run_retrain(options(image_dir, tmp_path, tiny_model_dir, html=str(tmp_path / "html")),
                         log=messages.append)
    page = (tmp_path / "html" / "index.html").read_text()
    confusion = result.test_report.confusion
    assert page.count(CARD) == int(confusion.sum() - np.trace(confusion))
    assert f"on {result.test_report.count} images" in page and (tmp_path / "html" / "curves.png").is_file()
    assert any(m.startswith("Wrote HTML report") for m in messages)
