"""A self-contained HTML report of a model's mistakes: open ``index.html`` from disk, no server, no internet.

One page holds the scores, the confusion matrix and a gallery of the
misclassified images, most confident mistakes first, each with its Grad-CAM
overlay. Clicking a matrix cell shows only that cell's images. Images are
small JPEG thumbnails beside the page, so a report on 10,000 photos stays a
few megabytes; the styles and the few lines of script are inline.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS
from ..errors import UserError, option_name, option_value
from ..files import atomic_write, check_writable_folder
from ..label.labeler import REPORT_TOP_K
from ..metrics import ClassificationReport, classification_report, reliability_bins
from ..progress import progress_bar
from ..training.head import EvalPoint
from .gradcam import GradCam, explain_shown, load_display
from .history_plot import plot_history
from .reliability import reliability_svg

if TYPE_CHECKING:
    from ..label.relabel import Verdict

THUMBNAIL_SIDE = 192  # pixels: sharp enough to recognise a photo, ~10 KB as JPEG
THUMBNAIL_QUALITY = 80
IMAGE_FOLDER = "images"
CURVES = "curves.png"
GRADCAM_BATCH = 16
GENERATOR = '<meta name="generator" content="retrain html_report">'  # marks pages (and thumbnails) we may replace


@dataclass
class ScoredImage:
    """One labelled image and the model's probabilities for it."""
    path: Path
    truth: int  # index of its folder's label
    probabilities: np.ndarray

    @property
    def prediction(self) -> int:
        return int(np.argmax(self.probabilities))


@dataclass
class ReportText:
    """The words that differ between a test report and a relabel audit."""
    title: str
    truth_name: str = "true"  # an audit compares with the folder an image sits in, which may be wrong
    gallery_name: str = "Misclassified images"


AUDIT_TEXT = ReportText("Relabel audit: suspected mislabels", truth_name="folder",
                        gallery_name="Suspected mislabels (folder differs from the prediction)")


def scored_images(paths: Sequence[Path], truths: Sequence[int], probabilities: np.ndarray) -> list[ScoredImage]:
    return [ScoredImage(Path(path), int(truth), row) for path, truth, row in zip(paths, truths, probabilities)]


def audited_images(verdicts: Sequence[Verdict], labels: list[str]) -> list[ScoredImage]:
    """relabel's verdicts on images in class folders, scored against the folder's label.

    Only the top 3 probabilities are known; the others count as 0, which the
    page never shows (it lists the top 3). A moved image is shown from where
    it went.
    """
    index = {label: i for i, label in enumerate(labels)}
    scored = []
    for verdict in verdicts:
        if verdict.current_label is None or not verdict.top:
            continue
        probabilities = np.zeros(len(labels))
        for label, probability in verdict.top:
            probabilities[index[label]] = probability
        path = verdict.source if verdict.source.exists() or verdict.destination is None else verdict.destination
        scored.append(ScoredImage(path, index[verdict.current_label], probabilities))
    return scored


def mistakes_first(scored: Sequence[ScoredImage]) -> list[ScoredImage]:
    """The misclassified images, the most confident mistakes first."""
    wrong = [image for image in scored if image.prediction != image.truth]
    return sorted(wrong, key=lambda image: -float(image.probabilities.max()))


def write_html_report(directory: str | os.PathLike, labels: list[str], scored: Sequence[ScoredImage],
                      text: ReportText, gradcam: GradCam | None = None,
                      history: Sequence[EvalPoint] = (), marks: tuple[int | None, int | None] = (None, None),
                      option: str = "html") -> Path:
    """Write ``directory/index.html`` and its images; returns the page's path.

    ``history`` adds the training curves, with ``marks`` (the early-stopping
    restored and stopping steps) drawn on them; errors name ``option``, the folder's option.
    """
    directory = Path(directory)
    check_report_folder(directory, option)
    check_writable_folder(directory / IMAGE_FOLDER, option)
    if not scored:
        raise UserError(f"{option_name(option)}: no readable images in folders named after the graph's labels to "
                        f"report on")
    report = classification_report(np.array([s.truth for s in scored]), np.array([s.prediction for s in scored]),
                                   labels)
    mistakes = mistakes_first(scored)
    _remove_previous_report(directory)
    cards = _write_gallery_images(directory, mistakes, gradcam)
    curves = ""
    if history:
        curves = CURVES
        plot_history(history, directory / CURVES, *marks)
    bins = reliability_bins(np.stack([s.probabilities for s in scored]), np.array([s.truth for s in scored]))
    reliability = (f"<section><h2>Reliability</h2>{reliability_svg(bins)}<p class='hint'>Accuracy per confidence "
                   f"bin; the dashed diagonal is a calibrated model. ECE = {bins.expected_calibration_error:.3f}</p>"
                   f"</section>")
    page = _page(report, labels, mistakes, cards, text, curves, reliability)
    with atomic_write(directory / "index.html", "w") as handle:  # last: a finished page has all its images
        handle.write(page)
    return directory / "index.html"


def _holds_a_report(directory: Path) -> bool:
    page = directory / "index.html"
    return page.is_file() and GENERATOR in page.read_text(encoding="utf-8", errors="replace")


def check_report_folder(directory: str | os.PathLike, option: str = "html") -> None:
    """The report's folder must be new, empty or an earlier report (replaced), and writable.

    Run before the slow work. A folder of the user's own files is refused
    rather than mixed with thumbnails that could replace them.
    """
    directory = Path(directory)
    if directory.is_dir() and any(directory.iterdir()) and not _holds_a_report(directory):
        raise UserError(f"{option_value(option, directory)} holds other files; choose a new or empty folder (an "
                        f"earlier report there is replaced)")
    check_writable_folder(directory, option)


def _remove_previous_report(directory: Path) -> None:
    """An earlier report's thumbnails (``check_report_folder`` allows no other files here)."""
    if _holds_a_report(directory):
        for stale in (directory / IMAGE_FOLDER).glob("*.jpg"):
            stale.unlink()


def _save_jpeg(image, path: Path) -> None:
    try:
        image.save(path, format="JPEG", quality=THUMBNAIL_QUALITY)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}; free some space or choose another "
                        f"{option_name('html')}") from None


def _write_gallery_images(directory: Path, mistakes: list[ScoredImage], gradcam: GradCam | None) -> list[tuple]:
    """Thumbnail (and Grad-CAM overlay of the predicted class) per mistake -> (photo, overlay) file names."""
    names = []
    budget = gradcam.max_image_megapixels if gradcam else DEFAULT_MAX_IMAGE_MEGAPIXELS
    progress = progress_bar(total=len(mistakes), desc="Report images", unit="img", disable=not mistakes)
    for start in range(0, len(mistakes), GRADCAM_BATCH):
        batch = mistakes[start:start + GRADCAM_BATCH]
        thumbnails = [load_display(mistake.path, THUMBNAIL_SIDE, budget) for mistake in batch]
        overlays = (explain_shown(gradcam, [m.path for m in batch], [m.prediction for m in batch], thumbnails)
                    if gradcam else [None] * len(batch))
        for number, (thumbnail, overlay) in enumerate(zip(thumbnails, overlays), start):
            photo = f"{IMAGE_FOLDER}/{number:05d}.jpg"
            _save_jpeg(thumbnail, directory / photo)
            heatmap = f"{IMAGE_FOLDER}/{number:05d}_gradcam.jpg" if overlay is not None else ""
            if heatmap:
                _save_jpeg(overlay, directory / heatmap)
            names.append((photo, heatmap))
        progress.update(len(batch))
    progress.close()
    return names


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _scores_table(report: ClassificationReport) -> str:
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{report.precision[i]:.3f}</td><td>{report.recall[i]:.3f}"
                   f"</td><td>{report.f1[i]:.3f}</td><td>{report.support[i]}</td></tr>"
                   for i, label in enumerate(report.labels))
    return ("<table class='scores'><tr><th></th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{rows}<tr class='macro'><th>macro avg</th><td>{report.macro_precision:.3f}</td>"
            f"<td>{report.macro_recall:.3f}</td><td>{report.macro_f1:.3f}</td><td>{report.count}</td></tr></table>")


def _confusion_table(report: ClassificationReport, text: ReportText) -> str:
    """The matrix; each non-empty off-diagonal cell is a button that filters the gallery."""
    peak = max(int(report.confusion.max(initial=0)), 1)
    header = "".join(f"<th class='column'>{html.escape(label)}</th>" for label in report.labels)
    rows = []
    for t, label in enumerate(report.labels):
        cells = []
        for p in range(len(report.labels)):
            count = int(report.confusion[t, p])
            shade = f"style='background: rgba(33, 102, 172, {0.08 + 0.72 * count / peak:.2f})'" if count else ""
            dark = " dark" if count > peak / 2 else ""
            if t != p and count:
                cells.append(f"<td {shade} class='cell{dark}'><button class='cell-button' data-true='{t}' "
                             f"data-pred='{p}' data-count='{count}' title='show these {count} images'>{count}"
                             f"</button></td>")
            else:
                cells.append(f"<td {shade} class='cell{dark}{' diagonal' if t == p else ''}'>{count}</td>")
        rows.append(f"<tr><th class='row'>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return (f"<table class='confusion'><caption>rows: {text.truth_name} label, columns: predicted label</caption>"
            f"<tr><th></th>{header}</tr>{''.join(rows)}</table>")


def _card(mistake: ScoredImage, labels: list[str], photo: str, heatmap: str, text: ReportText) -> str:
    probabilities = mistake.probabilities
    top = "".join(f"<li>{html.escape(labels[i])} {probabilities[i]:.2f}</li>"
                  for i in np.argsort(-probabilities)[:REPORT_TOP_K])
    name = html.escape(str(mistake.path))
    overlay = (f"<img src='{heatmap}' alt='Grad-CAM for {html.escape(labels[mistake.prediction])}' "
               f"title='Grad-CAM: where the model saw {html.escape(labels[mistake.prediction])}'>" if heatmap else "")
    return (f"<figure class='card' data-true='{mistake.truth}' data-pred='{mistake.prediction}'>"
            f"<div class='pictures'><img src='{photo}' alt='{name}' title='{name}'>{overlay}</div>"
            f"<figcaption><div>{text.truth_name}: <b>{html.escape(labels[mistake.truth])}</b></div>"
            f"<div>predicted: <b>{html.escape(labels[mistake.prediction])}</b> {probabilities.max():.2f}</div>"
            f"<ol>{top}</ol><div class='path'>{name}</div></figcaption></figure>")


def _page(report: ClassificationReport, labels: list[str], mistakes: list[ScoredImage], cards: list[tuple],
          text: ReportText, curves: str, reliability: str) -> str:
    gallery = "".join(_card(m, labels, photo, heatmap, text) for m, (photo, heatmap) in zip(mistakes, cards))
    curves_section = f"<section><h2>Training curves</h2><img class='curves' src='{curves}' alt='training curves'>" \
                     f"</section>" if curves else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{GENERATOR}<title>{html.escape(text.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body><h1>{html.escape(text.title)}</h1>
<p class="summary">accuracy <b>{_percent(report.accuracy)}</b> on {report.count} images; macro precision
{report.macro_precision:.3f}, recall {report.macro_recall:.3f}, F1 {report.macro_f1:.3f};
<b id="mistake-total">{len(mistakes)}</b> misclassified.</p>
<div class="tables"><section><h2>Per class</h2>{_scores_table(report)}</section>
<section><h2>Confusion matrix</h2>{_confusion_table(report, text)}
<p class="hint">Click a number off the diagonal to see its images.</p></section>{reliability}</div>
{curves_section}
<section><h2>{html.escape(text.gallery_name)}</h2>
<p class="filter-status"><span id="filter-text">All {len(mistakes)}, most confident first.</span>
<button id="show-all" hidden>show all</button></p>
<div id="gallery">{gallery}</div></section>
<script>{SCRIPT}</script></body></html>
"""


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.2em; }
.tables { display: flex; flex-wrap: wrap; gap: 2em; }
table { border-collapse: collapse; } td, th { padding: 3px 8px; text-align: right; }
.scores tr:nth-child(even) { background: #f3f3f3; } .scores .macro { border-top: 1px solid #888; }
.confusion td { min-width: 2.5em; text-align: center; border: 1px solid #ddd; }
.confusion .dark, .confusion .dark button { color: white; } .confusion .diagonal { font-weight: bold; }
.confusion th.column { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
.confusion caption { caption-side: bottom; color: #666; font-size: 0.9em; }
.cell-button { font: inherit; border: 0; background: none; cursor: pointer; text-decoration: underline; width: 100%; }
.cell-button.active { outline: 2px solid #d62728; }
.hint, .filter-status { color: #555; }
#gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.card { margin: 0; width: 392px; border: 1px solid #ddd; border-radius: 4px; padding: 4px; }
.card[hidden] { display: none; }
.pictures { display: flex; gap: 4px; } .pictures img { width: 192px; height: 192px; object-fit: contain; }
figcaption ol { margin: 2px 0; padding-left: 1.4em; color: #555; }
.path { color: #888; font-size: 0.8em; overflow-wrap: anywhere; }
.curves { max-width: 100%; }
"""

SCRIPT = """
const cards = Array.from(document.querySelectorAll('#gallery .card'));
const buttons = Array.from(document.querySelectorAll('.cell-button'));
const status = document.getElementById('filter-text');
const showAll = document.getElementById('show-all');
function filter(button) {
  let shown = 0;
  for (const card of cards) {
    const match = !button || (card.dataset.true === button.dataset.true && card.dataset.pred === button.dataset.pred);
    card.hidden = !match;
    if (match) shown += 1;
  }
  buttons.forEach(b => b.classList.toggle('active', b === button));
  showAll.hidden = !button;
  status.textContent = button ? `Showing ${shown} image(s) of this cell.`
                              : `All ${cards.length}, most confident first.`;
}
buttons.forEach(b => b.addEventListener('click', () => filter(b)));
showAll.addEventListener('click', () => filter(null));
"""
