"""The HTML report shows exactly the mistakes, opens from disk, and works in a real browser."""
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrain.errors import UserError
from retrain.explain.gradcam import GradCam
from retrain.explain.html_report import AUDIT_TEXT, ReportText, ScoredImage, mistakes_first, write_html_report
from retrain.label.labeler import GraphLabeler, resolve_graph_config
from retrain.training.head import EvalPoint
from tests.conftest import CLASS_COLOURS, FLOWERS, make_dataset, make_image
from tests.test_cli import run_script
from tests.test_relabel import LABELS, labeler, tiny_graph  # noqa: F401 (module-scoped fixtures)

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


def scored_folder(labeler: GraphLabeler, image_dir: Path) -> list[ScoredImage]:  # noqa: F811
    paths = sorted(image_dir.rglob("*.jpg"))
    return [ScoredImage(path, LABELS.index(path.parent.name), probabilities)
            for path, probabilities, _ in labeler.predict_files(paths)]


@pytest.fixture(scope="module")
def report_dir(tiny_graph, labeler, tmp_path_factory):  # noqa: F811
    """A report on folders where several images sit in the wrong class folder."""
    root = tmp_path_factory.mktemp("report")
    images = make_dataset(root / "images", per_class=4)
    for i, (folder, colour) in enumerate([("green", "red"), ("green", "red"), ("blue", "green"), ("red", "blue")]):
        make_image(images / folder / f"misfiled_{i}.jpg", CLASS_COLOURS[colour], seed=900 + i, size=(300, 200))
    scored = scored_folder(labeler, images)
    history = [EvalPoint(step, 0.5 + step / 200, 1 - step / 200, 0.4 + step / 250, 10, 1.1 - step / 250)
               for step in range(0, 101, 10)]
    config = resolve_graph_config(tiny_graph)
    write_html_report(root / "html", LABELS, scored, ReportText("Test report"), GradCam(tiny_graph, config),
                      history)
    return root / "html", scored


def test_the_gallery_holds_exactly_the_mistakes_most_confident_first(report_dir):
    folder, scored = report_dir
    page = (folder / "index.html").read_text()
    mistakes = mistakes_first(scored)
    truths, predictions = np.array([s.truth for s in scored]), np.array([s.prediction for s in scored])
    assert len(mistakes) == int((truths != predictions).sum()) >= 4
    cards = re.findall(r"<figure class='card' data-true='(\d+)' data-pred='(\d+)'", page)
    assert cards == [(str(m.truth), str(m.prediction)) for m in mistakes]
    confidences = [m.probabilities.max() for m in mistakes]
    assert confidences == sorted(confidences, reverse=True)
    buttons = re.findall(r"data-true='(\d+)' data-pred='(\d+)' data-count='(\d+)'", page)
    assert sum(int(count) for *_, count in buttons) == len(mistakes)
    for image in re.findall(r"src='([^']+)'", page):
        assert (folder / image).is_file()
    assert "http://" not in page and "https://" not in page  # nothing fetched from the internet
    assert len(re.findall(r"_gradcam\.jpg'", page)) == len(mistakes) and "curves.png" in page


def test_thumbnails_are_small(report_dir):
    folder, _ = report_dir
    from PIL import Image
    for path in (folder / "images").glob("*.jpg"):
        with Image.open(path) as image:
            assert max(image.size) <= 192


def test_audit_wording_and_unwritable_folders(labeler, tmp_path):  # noqa: F811
    scored = scored_folder(labeler, make_dataset(tmp_path / "images", per_class=2))
    page = write_html_report(tmp_path / "audit", LABELS, scored, AUDIT_TEXT).read_text()
    assert "rows: folder label" in page and "Relabel audit" in page
    own = tmp_path / "own"
    make_image(own / "images" / "00001.jpg", CLASS_COLOURS["red"], seed=1)  # a user's picture, not a report's
    with pytest.raises(UserError, match="holds other files; choose a new or empty folder"):
        write_html_report(own, LABELS, scored, AUDIT_TEXT)
    rewritten = write_html_report(tmp_path / "audit", LABELS, scored[:3], AUDIT_TEXT).read_text()
    assert len(list((tmp_path / "audit" / "images").glob("*.jpg"))) == rewritten.count("<img src=")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="^html: cannot write in"):
        write_html_report(blocker / "html", LABELS, scored, AUDIT_TEXT)


def chromium_executable() -> str:
    """The system Chromium; missing, it fails the test in CI (CI=true) and skips it elsewhere."""
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if not path:
        message = "Chromium or Playwright is missing: apt-get install chromium; pip install '.[test]'"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def check_in_browser(page_path: Path, screenshot: Path) -> dict:
    """Open the report from disk in headless Chromium: images load, cells filter, no console errors."""
    from playwright.sync_api import sync_playwright
    errors: list[str] = []
    checked = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_path.resolve().as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
            assert widths and min(widths) > 0, widths
            cards = page.locator("#gallery .card")
            total = cards.count()
            for button in page.locator(".cell-button").all():
                button.click()
                shown = page.locator("#gallery .card:visible").count()
                assert shown == int(button.get_attribute("data-count")) > 0
                checked[(button.get_attribute("data-true"), button.get_attribute("data-pred"))] = shown
            page.locator(".cell-button").first.click()
            page.screenshot(path=str(screenshot), full_page=True)
            page.click("#show-all")
            assert page.locator("#gallery .card:visible").count() == total
        finally:
            browser.close()
    assert not errors, errors
    return checked


def test_the_report_works_in_a_real_browser(report_dir, tmp_path):
    folder, scored = report_dir
    checked = check_in_browser(folder / "index.html", tmp_path / "report.png")
    assert sum(checked.values()) == len(mistakes_first(scored))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def printed_confusion(stdout: str) -> np.ndarray:
    """The confusion matrix evaluate prints: the rows after its title and column header."""
    lines = stdout.split("Confusion matrix")[1].splitlines()[2:]
    rows = [line.split()[1:] for line in lines if re.fullmatch(r"\S+(\s+\d+)+", line)]
    return np.array(rows, dtype=int)


@pytest.mark.integration
def test_the_report_on_the_flowers_is_small_and_shows_what_evaluate_counts(flowers_retrained, tmp_path):
    graph, html_dir = flowers_retrained.out / "graph.pb", tmp_path / "html"
    result = run_script("scripts.evaluate", "--graph", str(graph), "--image_dir", str(FLOWERS), "--html",
                        str(html_dir), timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    confusion = printed_confusion(result.stdout)
    photos = sum(1 for path in FLOWERS.rglob("*") if path.is_file())
    assert confusion.shape == (5, 5) and confusion.sum() == photos
    off_diagonal = int(confusion.sum() - np.trace(confusion))
    page = html_dir / "index.html"
    cards = page.read_text().count("<figure class='card'")
    size = sum(path.stat().st_size for path in html_dir.rglob("*") if path.is_file())
    print(f"report: {size / 1e6:.2f} MB for {photos} images, {cards} in the gallery, {off_diagonal} off the diagonal")
    assert size < 20e6 and cards == off_diagonal
    checked = check_in_browser(page, tmp_path / "flowers.png")
    assert sum(checked.values()) == off_diagonal
