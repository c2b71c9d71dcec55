"""Models that are not square-image classifiers, trained elsewhere and shipped in a package (the PP-OCR
text-line models of PyPI's rapidocr-onnxruntime), added with `dlstream models add` and streamed from
`dlstream publish`: a 48x192 direction classifier and a text recogniser (sequence, CTC) whose predictions,
read back by the SDK, match the same ONNX files run in-process with the declared preprocessing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dlstream.domain.card import read_card
from dlstream.domain.contract import SequencePrediction
from dlstream.models.postprocess import read_vocabulary
from dlstream.models.preprocess.declared import preprocessor
from dlstream.models.preprocess.image import encode_png
from dlstream.models.serving import Named, runner_outputs
from dlstream.models.source_models import load_model_file
from dlstream.tools.stack.local_stack import LocalStack
from tests.integration.conftest import TopicFactory
from tests.integration.drift import MONITOR_ARGV, drift_settings, judged_windows
from tests.integration.workers import (
    Worker,
    dlstream,
    raw_outcomes,
    wait_for_predictions,
)

pytestmark = pytest.mark.integration

WORDS = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "stream",
    "kafka",
    "triton",
    "model",
    "2026",
    "serving",
    "drift",
)
# As the package's own recogniser prepares a line (BGR, height 48, (x / 255 - 0.5) / 0.5, zero padding on
# the right), at a fixed width so that an answer does not depend on the rest of its batch.
RECOGNISER_PREPROCESS = (
    "colour=BGR",
    "size=640x48",
    "resize=fixed-height",
    "mean=0.5",
    "std=0.5",
    "pad_value=127.5",
)
WINDOW = 10
DIRECTION_PREPROCESS = (*RECOGNISER_PREPROCESS[:1], "size=192x48", *RECOGNISER_PREPROCESS[2:])


def ocr_files(out: Path) -> tuple[Path, Path, Path]:
    """The package's recogniser and direction classifier, and the recogniser's vocabulary as a file (the
    blank first, the characters of the model's metadata, then the space, as the package reads them)."""
    import rapidocr_onnxruntime  # type: ignore[import-untyped]

    models = Path(rapidocr_onnxruntime.__file__).parent / "models"
    recogniser = models / "ch_PP-OCRv4_rec_infer.onnx"
    characters = ort.InferenceSession(str(recogniser)).get_modelmeta().custom_metadata_map["character"]
    vocabulary = out / "vocabulary.txt"
    vocabulary.write_text("\n".join(["<blank>", *characters.splitlines(), " "]) + "\n", encoding="utf-8")
    return recogniser, models / "ch_ppocr_mobile_v2.0_cls_infer.onnx", vocabulary


def text_lines(folder: Path, count: int, seed: int) -> list[str]:
    """``count`` printed text lines as PNGs in ``folder`` (DejaVu Sans from matplotlib's package, three
    sizes, some upside down for the direction classifier); returns their texts."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font_file = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        font = ImageFont.truetype(str(font_file), rng.choice([18, 22, 26]))
        image = Image.new("RGB", (int(font.getlength(text)) + 16, 40), (255, 255, 255))
        ImageDraw.Draw(image).text((8, 6), text, fill=(0, 0, 0), font=font)
        if i % 4 == 3:
            image = image.rotate(180)
        (folder / f"{i:03d}.png").write_bytes(encode_png(np.asarray(image)))
        texts.append(text)
    return texts


def in_process(version_dir: Path, payloads: list[bytes]) -> list[Named]:
    """What the ONNX file of a version answers in-process, one payload at a time, with the preprocessing
    and postprocessing its card declares."""
    card = read_card(version_dir)
    assert card.preprocessing is not None
    assert card.source is not None
    prepare = preprocessor(card.preprocessing, root=version_dir)
    model = load_model_file(version_dir / card.source.file, "onnx")
    vocabulary = read_vocabulary(version_dir / "vocabulary.txt") if card.task.kind == "sequence" else None
    answers = []
    for payload in payloads:
        item = prepare.decode(payload)
        answers.append(runner_outputs(card, model.run(prepare.batch([item])), [item], None, vocabulary))
    return answers


@pytest.mark.slow(
    reason="two models added (each a CLI run and a load in Triton), then streamed and run in-process"
)
def test_a_text_recogniser_and_a_48x192_classifier_from_a_package_are_added_and_streamed(
    empty_triton: LocalStack, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    recogniser, direction, vocabulary = ocr_files(tmp_path)
    text_lines(tmp_path / "reference", 20, seed=1)
    labels = tmp_path / "directions.txt"
    labels.write_text("0\n180\n")
    deployed = drift_settings(
        empty_triton.settings, topics, group_id, repository=empty_triton.repository, window_size=WINDOW
    )
    add = ["models", "add", "ocr", "--modality", "image", "--onnx", str(recogniser), "--task", "sequence"]
    add += ["--task-option", f"vocabulary={vocabulary}", "--outputs", "probabilities"]
    add += ["--reference", str(tmp_path / "reference")]
    for pair in RECOGNISER_PREPROCESS:
        add += ["--preprocess", pair]
    print(dlstream(deployed, *add).stdout.strip())
    add = ["models", "add", "direction", "--modality", "image", "--onnx", str(direction), "--default"]
    add += ["--labels", str(labels), "--reference", str(tmp_path / "reference"), "--outputs", "probabilities"]
    for pair in DIRECTION_PREPROCESS:
        add += ["--preprocess", pair]
    print(dlstream(deployed, *add).stdout.strip())

    stream = tmp_path / "stream"
    texts = text_lines(stream, 24, seed=2)
    (stream / "zz-not-an-image.png").write_bytes(b"GIF89a, not a PNG")
    worker = Worker(deployed, tmp_path / "worker.log", repository=empty_triton.repository).start()
    monitor = Worker(
        deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV, repository=empty_triton.repository
    )
    monitor.start()
    try:
        sent = {}
        for model in ("ocr", "direction"):
            published = dlstream(deployed, "publish", "image", str(stream), "--model", model, "--print-ids")
            for line in published.stdout.splitlines():
                event = json.loads(line)
                sent[event["id"]] = (model, Path(event["path"]))
        images = {i for i, (_, path) in sent.items() if path.name[0].isdigit()}
        found = wait_for_predictions(deployed, images)
        assert worker.terminate() == 0
        # The monitor windows both models' predictions (a sequence model's by text length, step confidence
        # and character mix): 24 each, windows of 10.
        for model in ("ocr", "direction"):
            judged_windows(deployed, model, "1", len(images) // 2 // WINDOW)
        assert monitor.terminate() == 0
    finally:
        worker.stop()
        monitor.stop()
    letters = raw_outcomes(deployed)[1]
    assert sorted(d.reason.value for d in letters) == ["undecodable-payload"] * 2
    assert len(found) == len(sent) - 2

    by_file = {(model, path.name): found[i] for i, (model, path) in sent.items() if i in found}
    files = sorted(stream.glob("[0-9]*.png"))
    payloads = [f.read_bytes() for f in files]
    read = [
        in_process(empty_triton.repository / "ocr" / "1", payloads)[i]["TEXT"][0][0].decode()
        for i in range(len(files))
    ]
    streamed = [by_file[("ocr", f.name)].data for f in files]
    assert all(isinstance(p, SequencePrediction) for p in streamed)
    assert [p.text for p in streamed if isinstance(p, SequencePrediction)] == read
    upright = [i for i in range(len(files)) if i % 4 != 3]
    right = sum(read[i].strip() == texts[i] for i in upright)
    print(f"recognised {right} of {len(upright)} upright lines exactly; e.g. {read[:3]} for {texts[:3]}")
    assert right >= len(upright) * 0.7

    directions = in_process(empty_triton.repository / "direction" / "1", payloads)
    expected = [["0", "180"][int(d["PROBABILITIES"][0].argmax())] for d in directions]
    served = [by_file[("direction", f.name)].classification.label for f in files]
    assert served == expected
    truth = ["180" if i % 4 == 3 else "0" for i in range(len(files))]
    print(f"direction right on {sum(a == b for a, b in zip(served, truth, strict=True))} of {len(files)}")
