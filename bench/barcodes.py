"""Barcode reading benchmark: the camera reader's chain against each decoder alone.

For every image of a manifest (CSV ``set,file,symbology,expected_text``, files at
``DIR/set/file`` beside the manifest, as in ``shared/testdata/barcodes``), three
contenders decode the same grayscale image, in turn, in the same run:

- **chain**: ``edge.camera.decode.BarcodeDecoder()`` as ``postedge scan`` uses it
  (zxing-cpp, then pyzbar, over the preprocessing ladder, trusted reads only);
- **zxing-cpp**: ``zxingcpp.read_barcodes(image)`` with its defaults;
- **pyzbar**: ``pyzbar.decode(image)`` with its defaults, data decoded as UTF-8.

An image is *correct* when a result equals the expected text exactly, *wrong* when there
are results and none equals it (a misread: worse than none), *missed* when there are
none. Milliseconds are the decode call alone (the image is loaded once beforehand);
reported as median, p95 and max per contender, with the ratios to the chain's.

    python bench/barcodes.py --manifest PATH [--json FILE] [--repeat N]

``--repeat N`` decodes each image N times per contender and keeps the median time.
``--spoil NAME`` (repeatable; ``all`` for every one) runs the whole manifest again with
each image spoiled as a camera spoils labels, to see what the preprocessing ladder adds
and whether it lets misreads in: ``rot20`` and ``rot-35`` (turned, white canvas),
``half`` and ``third`` (shrunk with area averaging), ``blur`` (Gaussian, sigma 1.2),
``faded`` (black 100, white 150), ``jpeg10`` (JPEG quality 10), ``noise`` (Gaussian,
sigma 25, fixed seed).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import zxingcpp
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.camera.decode import BarcodeDecoder  # noqa: E402
from tests.labels import rotate  # noqa: E402

Image = NDArray[np.uint8]
Contender = Callable[[Image], list[str]]


@dataclass
class Tally:
    correct: int = 0
    missed: int = 0
    wrong: int = 0
    extra: int = 0
    """Results other than the expected text on images read correctly."""
    ms: list[float] = field(default_factory=list)
    wrong_reads: list[dict[str, object]] = field(default_factory=list)

    def add(self, name: str, expected: str, texts: list[str], ms: float) -> None:
        self.ms.append(ms)
        if expected in texts:
            self.correct += 1
            self.extra += sum(1 for t in texts if t != expected)
        elif texts:
            self.wrong += 1
            self.wrong_reads.append({"image": name, "expected": expected, "read": texts})
        else:
            self.missed += 1

    def summary(self) -> dict[str, object]:
        ms = sorted(self.ms)
        return {
            "images": len(ms),
            "correct": self.correct,
            "missed": self.missed,
            "wrong": self.wrong,
            "extra": self.extra,
            "ms_median": round(statistics.median(ms), 2),
            "ms_p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
            "ms_max": round(ms[-1], 2),
            "ms_mean": round(statistics.fmean(ms), 2),
        }


def _turned(degrees: float) -> Callable[[Image], Image]:
    def turn(image: Image) -> Image:
        return np.asarray(rotate(image, degrees), np.uint8)  # as the tests spoil labels

    return turn


def _shrunk(factor: float) -> Callable[[Image], Image]:
    def shrink(image: Image) -> Image:
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)

    return shrink


def _jpeg(image: Image) -> Image:
    _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 10])
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE), np.uint8)


def _noise(image: Image) -> Image:
    noisy = image + np.random.default_rng(1).normal(0, 25, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


SPOILERS: dict[str, Callable[[Image], Image]] = {
    "rot20": _turned(20),
    "rot-35": _turned(-35),
    "half": _shrunk(0.5),
    "third": _shrunk(0.35),
    "blur": lambda image: np.asarray(cv2.GaussianBlur(image, (0, 0), 1.2), np.uint8),
    "faded": lambda image: (image.astype(np.float32) / 255 * 50 + 100).round().astype(np.uint8),
    "jpeg10": _jpeg,
    "noise": _noise,
}


def load_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"set", "file", "expected_text"} <= set(rows[0]):
        raise SystemExit(f"{path}: not a manifest (set,file,symbology,expected_text)")
    return rows


def contenders() -> dict[str, Contender]:
    from pyzbar import pyzbar  # type: ignore[import-untyped]

    chain = BarcodeDecoder()

    def run_chain(image: Image) -> list[str]:
        return [read.text for read in chain.decode(image).reads]

    def run_zxing(image: Image) -> list[str]:
        return [found.text for found in zxingcpp.read_barcodes(image)]

    def run_zbar(image: Image) -> list[str]:
        return [bytes(d.data).decode("utf-8", "replace") for d in pyzbar.decode(image)]

    return {"chain": run_chain, "zxing-cpp": run_zxing, "pyzbar": run_zbar}


def timed(contender: Contender, image: Image, repeat: int) -> tuple[list[str], float]:
    times = []
    texts: list[str] = []
    for _ in range(repeat):
        started = time.perf_counter()
        texts = contender(image)
        times.append((time.perf_counter() - started) * 1000)
    return texts, statistics.median(times)


def run(manifest: Path, repeat: int, spoil: str | None = None) -> dict[str, object]:
    rows = load_manifest(manifest)
    runners = contenders()
    tallies = {name: Tally() for name in runners}
    by_set: dict[str, dict[str, Tally]] = {}
    folder = manifest.parent
    images = [(row, cv2.imread(str(folder / row["set"] / row["file"]), 0)) for row in rows]
    missing = [row["set"] + "/" + row["file"] for row, image in images if image is None]
    if missing:
        raise SystemExit(f"cannot read {len(missing)} images, e.g. {missing[0]}")
    for runner in runners.values():  # warm-up: first calls load libraries
        runner(np.asarray(images[0][1], dtype=np.uint8))
    for row, image in images:
        gray = np.asarray(image, dtype=np.uint8)
        if spoil is not None:
            gray = SPOILERS[spoil](gray)
        label = f"{row['set']}/{row['file']}"
        per_set = by_set.setdefault(row["set"], {name: Tally() for name in runners})
        for name, runner in runners.items():
            texts, ms = timed(runner, gray, repeat)
            tallies[name].add(label, row["expected_text"], texts, ms)
            per_set[name].add(label, row["expected_text"], texts, ms)
    summaries = {name: tally.summary() for name, tally in tallies.items()}
    chain_median = float(summaries["chain"]["ms_median"])  # type: ignore[arg-type]
    return {
        "manifest": str(manifest),
        "spoiled": spoil,
        "images": len(rows),
        "repeat": repeat,
        "contenders": summaries,
        "ms_median_ratio_to_chain": {
            name: round(float(s["ms_median"]) / chain_median, 2)  # type: ignore[arg-type]
            for name, s in summaries.items()
        },
        "by_set": {
            set_name: {name: asdict(t) | t.summary() for name, t in tallies_.items()}
            for set_name, tallies_ in by_set.items()
        },
        "wrong_reads": {name: tally.wrong_reads for name, tally in tallies.items()},
    }


def report(result: dict[str, object]) -> None:
    spoiled = f", spoiled: {result['spoiled']}" if result["spoiled"] else ""
    print(f"manifest {result['manifest']}: {result['images']} images{spoiled}")
    print(f"{'contender':10} correct missed wrong extra  median    p95    max (ms)")
    contenders_ = result["contenders"]
    assert isinstance(contenders_, dict)
    for name, s in contenders_.items():
        print(
            f"{name:10} {s['correct']:7} {s['missed']:6} {s['wrong']:5} {s['extra']:5} "
            f"{s['ms_median']:7.2f} {s['ms_p95']:6.2f} {s['ms_max']:6.1f}"
        )
    by_set = result["by_set"]
    assert isinstance(by_set, dict)
    for set_name, per in by_set.items():
        cells = "  ".join(
            f"{n} {t['correct']}/{t['images']} ({t['wrong']} wrong)" for n, t in per.items()
        )
        print(f"  {set_name:10} {cells}")
    wrong = result["wrong_reads"]
    assert isinstance(wrong, dict)
    for name, reads in wrong.items():
        for read in reads:
            expected, got = read["expected"], read["read"]
            print(f"  WRONG {name}: {read['image']} expected {expected!r} read {got!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="manifest.csv")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--repeat", type=int, default=1, help="decodes per image and contender")
    parser.add_argument(
        "--spoil",
        action="append",
        default=[],
        choices=[*SPOILERS, "all"],
        help="also run on spoiled copies (repeatable)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    spoils = list(SPOILERS) if "all" in args.spoil else args.spoil
    results = []
    for spoil in [None, *spoils]:
        result = run(args.manifest, args.repeat, spoil)
        report(result)
        results.append(result)
    if args.json:
        output = results[0] | {"spoiled_runs": results[1:]} if spoils else results[0]
        args.json.write_text(json.dumps(output, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
