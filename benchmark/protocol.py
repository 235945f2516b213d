"""The Attribution88 protocol as data (Bui, Yu, Collomosse, "RepMix", ECCV 2022).

Stages compute; this module only declares. Class index 0 is `real`, as in the released
RepMix code, and the generator classes follow in the paper's order.
"""

from __future__ import annotations

PROTOCOL_NAME = "attribution88"
# A config names its protocol: `attribution88` claims the paper's structure (checked, see
# PINNED below); `custom` is any other variant (other semantics, sources, sizes).
CUSTOM = "custom"
PROTOCOLS = (PROTOCOL_NAME, CUSTOM)
# Bumped whenever a rule below (or a rule a stage derives from them) changes the bytes built.
PROTOCOL_VERSION = "1.2.0"

REAL = "real"  # the class of photos, label 0
CLEAN = "none"  # the corruption of a clean image (manifest column `corruption`)
GAN_SOURCES = ("progan", "cramergan", "mmdgan", "sngan", "stylegan", "stylegan2", "stylegan3")
SOURCES = (REAL, *GAN_SOURCES)

# Implementations a source can name as its `generator` (generators.ARCHITECTURES has one module
# per entry): the seven GANs above, a DDPM/DDIM diffusion family, unconditional latent
# diffusion read from a diffusers folder, and `folder` for images generated elsewhere.
GENERATOR_ARCHS = (*GAN_SOURCES, "ddpm", "ldm", "folder")
# Those that only read a folder given in the config (images, or a diffusers model trained
# elsewhere): no checkpoint of ours, nothing to train.
FOLDER_ONLY_ARCHS = ("ldm", "folder")

SEEN_SEMANTICS = ("celeba", "bedroom", "airplane", "classroom", "cow", "church_outdoor")
UNSEEN_SEMANTICS = ("bridge", "bus", "sheep", "kitchen", "cat")
SEMANTICS = SEEN_SEMANTICS + UNSEEN_SEMANTICS

RESOLUTION = 128
SAMPLES_PER_MODEL = 100_000
CLUSTERS = 100
PER_CLUSTER = 120
SPLITS = {"train": 10_000, "val": 1_000, "test": 1_000}
SPLIT_NAMES = ("train", "val", "test")

# What the name `attribution88` pins besides SEMANTICS (order and seen flags) and GAN_SOURCES
# (class order; each source its own architecture, or a folder of that architecture's images):
# the settings that decide what kind of benchmark it is, so results on two builds compare.
# Counts are not pinned (samples per model, clusters x per_cluster, splits, photo pools):
# a scaled-down run keeps the protocol's structure, and dataset_info.json records whether the
# counts are the paper's (`paper_scale`). Nor are the choices where the paper is silent
# (k-means init, reference photos, feature input size, where and how corruptions are computed).
PINNED = {
    "resolution": RESOLUTION,
    "selection.method": "repmix_kmeans",  # the RepMix quality filter
    "corruptions.unseen_set": "repmix",  # the released code's held-out corruptions
    "corruptions.test_probability": 1.0,  # one corruption per test image
}
# The paper's counts: a build with all of them is `paper_scale`.
PAPER_SCALE = {
    "sampling.per_model": SAMPLES_PER_MODEL,
    "selection.clusters": CLUSTERS,
    "selection.per_cluster": PER_CLUSTER,
    **{f"splits.{name}": count for name, count in SPLITS.items()},
}

# ImageNet-C (Hendrycks & Dietterich 2019): 15 benchmark corruptions and 4 held-out extras.
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur",
    "spatter", "saturate",
)
SEVERITIES = (1, 2, 3, 4, 5)
# Where a corruption is computed (the corruptions section's `apply_at`): the side it works at,
# None for the stored size. `resized_224` is the RepMix code's route (it corrupts 224 px
# inputs): bilinear up to 224, corrupt, area back down to the stored size.
APPLY_AT_WORK_SIZE = {"stored": None, "resized_224": 224}

# Which corruptions a model may see in training. `repmix`: the released RepMix code holds out
# four blurs/weather types; `imagenet_c`: the official ImageNet-C split holds out its 4 extras.
UNSEEN_CORRUPTIONS = {
    "repmix": ("glass_blur", "motion_blur", "zoom_blur", "snow"),
    "imagenet_c": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}


def seen_corruptions(corruption_split: str) -> tuple[str, ...]:
    """The corruptions a model is trained with under the named split (15 of the 19)."""
    unseen = UNSEEN_CORRUPTIONS[corruption_split]
    return tuple(c for c in CORRUPTIONS if c not in unseen)
