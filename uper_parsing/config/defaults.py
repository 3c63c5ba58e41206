"""Every config key of uper_parsing, declared once, each with a comment.

Names follow detectron2 wherever detectron2 has the key (``MODEL.WEIGHTS``, ``SOLVER.BASE_LR``,
``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` ...). Task-specific groups are added by the ``add_*_config``
functions next to this file so that each feature owns its keys.
"""

from .config import CfgNode as CN

_C = CN()
_C.VERSION = 1  # config format version, bumped when keys are renamed

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "SemanticSegmentor"  # name in META_ARCH_REGISTRY
_C.MODEL.DEVICE = "cuda"  # "cuda", "cuda:N" or "cpu"; falls back to cpu with a warning
# Keep conv weights (and so every activation) in channels-last (NHWC) memory. The same model and
# checkpoints either way; cuDNN's NHWC kernels speed up single-GPU training of the ADE20K R50
# recipes (which set it), SyncBN on several GPUs can lose: docs/BENCHMARKS.md ("Channels-last")
_C.MODEL.CHANNELS_LAST = False
# How the one bilinear resize (layers.resize_to) computes: "matmul" (two matrix products with
# the bilinear weights: the same values, on the tensor cores, several times faster on a GPU),
# "interpolate" (F.interpolate) or "auto" (matmul on CUDA tensors, interpolate elsewhere).
# Process-wide, set by build_model (docs/ARCHITECTURE.md, "Resizing")
_C.MODEL.RESIZE_IMPL = "auto"
# torch.compile the model's compute-heavy submodules (a meta-architecture's ``compiled_submodules``:
# backbone and heads; Panoptic FPN's R-CNN parts stay eager). The first steps of each input shape
# compile (docs/BENCHMARKS.md has the wait); inductor caches compiled code across runs on the same
# machine
_C.MODEL.COMPILE = CN()
_C.MODEL.COMPILE.ENABLED = False  # compile (True) or run eagerly (False)
# torch.compile mode: "default", "reduce-overhead" (CUDA graphs: static shapes only),
# "max-autotune", "max-autotune-no-cudagraphs"
_C.MODEL.COMPILE.MODE = "default"
# torch.compile backend: "inductor" (generates kernels), or e.g. "aot_eager" (traces only: checks
# that the graphs capture, without code generation)
_C.MODEL.COMPILE.BACKEND = "inductor"
# Weights loaded into the model before training / evaluation ("" = none): a path, file://,
# https:// (downloaded once into $UPER_PARSING_CACHE, default ~/.cache/uper_parsing, checked against
# the SHA-256 prefix a "name-<hash>.pth" file name carries), detectron2:// or open-mmlab:// URL of a
# checkpoint of ours or another codebase's (.pth / .pt / .bin / .safetensors / .pkl, converted on
# load, see MODEL.WEIGHTS_FORMAT and tools/convert_weights.py); a backbone alone fills the backbone
_C.MODEL.WEIGHTS = ""
# Load MODEL.WEIGHTS even where tensor shapes differ from the model (e.g. another class count):
# those tensors keep their initial values. False: a shape mismatch stops the load, keys listed
_C.MODEL.WEIGHTS_PARTIAL = False
# Whose names MODEL.WEIGHTS uses: "auto" (files of tools/convert_weights.py are "ours", others are
# recognised by their keys; an error names the file when none or several formats fit), or "ours",
# "detectron2", "mmseg", "hf-upernet", "csail", "csail-upp", "timm", "torchvision". Resuming
# reads our own files, whatever the setting
_C.MODEL.WEIGHTS_FORMAT = "auto"
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]  # per-channel mean (INPUT.FORMAT order, 0-255)
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]  # per-channel std (INPUT.FORMAT order, 0-255)

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"  # name in BACKBONE_REGISTRY
# Stages frozen from the input: 0 none, 1 stem, 2 stem + res2, ... 5 everything
_C.MODEL.BACKBONE.FREEZE_AT = 0
# ImageNet weights of the backbone, any backbone ("" = random init), a path or URL as MODEL.WEIGHTS
# (e.g. open-mmlab://resnet50_v1c); the format is recognised from the keys: torchvision ResNets,
# detectron2's / Caffe2's R-50.pkl / R-101.pkl (these need MODEL.RESNETS.STRIDE_IN_1X1 True and BGR
# input with PIXEL_MEAN [103.53, 116.28, 123.675], PIXEL_STD [1, 1, 1]), mmcv / mmseg ResNetV1c,
# ConvNeXt and Swin, timm (or the original FB / Microsoft) ConvNeXt and Swin, CSAIL's ResNets, the
# backbone of any whole model MODEL.WEIGHTS reads, files of tools/convert_weights.py
_C.MODEL.BACKBONE.PRETRAINED = ""

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34, 50 or 101
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages returned by forward
_C.MODEL.RESNETS.NORM = "FrozenBN"  # "FrozenBN", "BN", "SyncBN" or "GN"
_C.MODEL.RESNETS.OUTPUT_STRIDE = 32  # 32, 16 (res5 dilated) or 8 (res4 and res5 dilated)
# "basic": 7x7 conv (torchvision); "deep": 3x3 convs 32-32-64 (mmseg ResNetV1c); "deep_base": 3x3
# convs 64-64-128 (CSAIL's ResNets, res2 then reads 128 channels)
_C.MODEL.RESNETS.STEM_TYPE = "basic"
# Bottleneck (depth 50 / 101) stride on the first 1x1 conv (MSRA / Caffe2 / detectron2 weights:
# True) instead of the 3x3 conv (torchvision weights: False); True is an error for depth 18 / 34
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False

# Any timm model as a backbone (build_timm_backbone), kept whole with timm's parameter names
# (backbone.model.*) less its classifier and final norm; its levels are named res<log2(stride)>.
# MODEL.BACKBONE.PRETRAINED: a timm weight file; FREEZE_AT k: the first k groups of timm's
# group_matcher (ConvNeXt: 1 stem, 2 stem + stage 0, ...)
_C.MODEL.TIMM = CN()
_C.MODEL.TIMM.NAME = "convnext_tiny"  # timm model name (timm.list_models()), built without weights
# Feature levels returned: indices into timm's feature_info / forward_intermediates (ConvNeXt:
# stages 0..3 = res2..res5 at strides 4..32); one level per stride
_C.MODEL.TIMM.OUT_INDICES = [0, 1, 2, 3]
# Stochastic depth rate of the last block (linear in depth); 0 is not passed to timm
_C.MODEL.TIMM.DROP_PATH_RATE = 0.0
# Norm after each returned level, at backbone.norms.resK: "" (none) or "LN" (LayerNorm over the
# channels, eps 1e-6: the norm0..norm3 of mmseg's / transformers' ConvNeXt UPerNets)
_C.MODEL.TIMM.OUT_NORM = ""

# Swin Transformer backbone (build_swin_backbone): mmseg's numerics (pad, then shift; windows never
# shrunk) with timm 1.0's parameter names; each returned stage has its LayerNorm backbone.norms.resK
# MODEL.BACKBONE.PRETRAINED: timm Swin weights; FREEZE_AT: 1 patch embedding, k + 1 also k stages
_C.MODEL.SWIN = CN()
_C.MODEL.SWIN.PATCH_SIZE = 4  # patch embedding stride (a power of two; 4: stages res2..res5)
_C.MODEL.SWIN.EMBED_DIM = 96  # channels of the first stage (doubled per stage)
_C.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]  # blocks per stage (Swin-T; S/B/L: [2, 2, 18, 2])
# Attention heads per stage (Swin-T/S; B: [4, 8, 16, 32] with EMBED_DIM 128; L: [6, 12, 24, 48]
# with EMBED_DIM 192 and WINDOW_SIZE 12)
_C.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
_C.MODEL.SWIN.WINDOW_SIZE = 7  # attention window (tokens per side; maps are padded to it)
_C.MODEL.SWIN.MLP_RATIO = 4.0  # MLP hidden width / channels
_C.MODEL.SWIN.QKV_BIAS = True  # bias in the query / key / value projection
# Stochastic depth rate of the last block, linear from 0 over all blocks (mmseg's Swin-T/S/B: 0.3)
_C.MODEL.SWIN.DROP_PATH_RATE = 0.3
# Absolute position embedding after the patch embedding (1, (224 / PATCH_SIZE)^2, EMBED_DIM),
# bicubically resized to other grids; no published Swin UPerNet uses it
_C.MODEL.SWIN.APE = False
_C.MODEL.SWIN.PATCH_NORM = True  # LayerNorm after the patch embedding and in each patch merging
_C.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages returned (each normed)

_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # backbone outputs fed to the FPN
_C.MODEL.FPN.OUT_CHANNELS = 256  # channels of every pyramid level
_C.MODEL.FPN.NORM = ""  # norm in lateral / output convs: "", "BN", "SyncBN", "GN"
_C.MODEL.FPN.TOP_BLOCK = "maxpool"  # extra level p6: "maxpool" (Mask R-CNN) or "" (none)

_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "UPerNetHead"  # name in SEM_SEG_HEADS_REGISTRY
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # features the head reads
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 150  # classes predicted (= len(metadata.stuff_classes))
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255  # label value that produces no loss
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 512  # head channels (UPerNet / PSP 512, Semantic FPN 128)
_C.MODEL.SEM_SEG_HEAD.NUM_CONVS = 2  # 3x3 convs before the classifier of a main FCNHead
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4  # stride the head predicts at (SemSegFPNHead)
_C.MODEL.SEM_SEG_HEAD.NORM = "BN"  # norm after each head conv: "BN", "SyncBN", "GN", ""
_C.MODEL.SEM_SEG_HEAD.POOL_SCALES = [1, 2, 3, 6]  # pyramid pooling bins (UPerNet, PSPNet)
# UPerNet's pyramid pooling: each branch's 1x1 conv after resizing its pooled map back (CSAIL's
# UPerNet decoder, for its checkpoints) instead of before (mmseg, transformers)
_C.MODEL.SEM_SEG_HEAD.PPM_CONV_AFTER_UPSAMPLE = False
_C.MODEL.SEM_SEG_HEAD.PPM_POOL = "avg"  # PPM bin pooling: "avg" (adaptive) or "prroi" (CSAIL UPP)
_C.MODEL.SEM_SEG_HEAD.DROPOUT = 0.1  # dropout before the classifier (mmseg's dropout_ratio)
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0  # weight of the head's cross-entropy
_C.MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS = []  # per-class cross-entropy weights ([] = uniform)
# Cross-entropy (main and auxiliary heads) divided by the labelled pixels (True, torch's mean) or by
# all pixels, ignored ones included (False: mmseg's CrossEntropyLoss default avg_non_ignore=False)
_C.MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE = True

# Auxiliary FCN head (PSPNet / mmseg style deep supervision); only used while training
_C.MODEL.AUX_HEAD = CN()
_C.MODEL.AUX_HEAD.ENABLED = False  # add the auxiliary head
_C.MODEL.AUX_HEAD.NAME = "FCNHead"  # name in SEM_SEG_HEADS_REGISTRY
_C.MODEL.AUX_HEAD.IN_FEATURES = ["res4"]  # feature it reads
_C.MODEL.AUX_HEAD.CONVS_DIM = 256  # channels of its convs
_C.MODEL.AUX_HEAD.NUM_CONVS = 1  # number of 3x3 convs before the classifier
_C.MODEL.AUX_HEAD.LOSS_WEIGHT = 0.4  # weight of its cross-entropy

# Unified perceptual parsing (UnifiedPerceptualParser): these keys set the heads and the losses.
_C.MODEL.MULTITASK = CN()
_C.MODEL.MULTITASK.TASKS = ["object", "part", "material", "scene", "texture"]  # heads to build
# Class counts, the object -> parts hierarchy and the ignore value: 0 / [] / -1 (unset) are filled
# at set-up (tasks.configure_model: default_setup, DefaultTrainer, Predictor) from the metadata of
# DATASETS.TRAIN (else the class lists stored in MODEL.WEIGHTS); a set value is checked against it.
_C.MODEL.MULTITASK.NUM_OBJECTS = 0  # object classes (= len(metadata.object_classes))
_C.MODEL.MULTITASK.OBJECT_PARTS = []  # per object, its global part ids, "-" first (object_parts)
_C.MODEL.MULTITASK.NUM_MATERIALS = 0  # material classes (= len(metadata.material_classes))
_C.MODEL.MULTITASK.NUM_SCENES = 0  # scene classes (= len(metadata.scene_classes))
_C.MODEL.MULTITASK.NUM_TEXTURES = 0  # texture classes (= len(metadata.texture_classes))
_C.MODEL.MULTITASK.IGNORE_VALUE = -1  # label of unlabelled pixels (= metadata.ignore_label)
_C.MODEL.MULTITASK.OBJECT_LOSS_WEIGHT = 1.0  # weight of the object cross-entropy (paper: 1)
_C.MODEL.MULTITASK.PART_LOSS_WEIGHT = 0.5  # weight of the grouped part cross-entropy (paper: 0.5)
_C.MODEL.MULTITASK.SCENE_LOSS_WEIGHT = 0.25  # weight of the scene cross-entropy (paper: 0.25)
_C.MODEL.MULTITASK.MATERIAL_LOSS_WEIGHT = 1.0  # weight of the material cross-entropy (paper: 1)
_C.MODEL.MULTITASK.TEXTURE_LOSS_WEIGHT = 1.0  # weight of the texture cross-entropy (paper: 1)
_C.MODEL.MULTITASK.TEXTURE_CONVS_DIM = 128  # channels of the texture head's convs
_C.MODEL.MULTITASK.TEXTURE_NUM_CONVS = 4  # 3x3 convs of the texture head (on detached res2)
# Object and part heads: "conv" (CSAIL: 3x3 conv + norm + ReLU, then 1x1) or "linear" (the UPerNet
# trunk's dropout + 1x1 object classifier and a bare 1x1 part classifier)
_C.MODEL.MULTITASK.OBJECT_PART_HEAD = "conv"
# Part loss: "object" (CSAIL: per object, mean over its pixels, summed over objects) or "pixel"
# (one mean over all part pixels, weighting frequent objects more)
_C.MODEL.MULTITASK.PART_LOSS_NORM = "object"
# 1: dense logits resized to the labels for the losses; 4: labels nearest-subsampled to the
# logits' 1/4 (CSAIL's segm_downsampling_rate)
_C.MODEL.MULTITASK.LOSS_DOWNSAMPLE = 1
# "joint": texture head trained with the rest (its input detached); "second_phase": everything
# but the texture head frozen, only texture batches drawn
_C.MODEL.MULTITASK.TEXTURE_TRAINING = "joint"
# > 0: the paper's texture schedule (engine.phases): every other task for SOLVER.MAX_ITER
# without texture crops (OUTPUT_DIR/first_phase), then the texture head alone, the rest frozen,
# for this many iterations (OUTPUT_DIR); 0: one run as TEXTURE_TRAINING says
_C.MODEL.MULTITASK.TEXTURE_PHASE_ITERS = 0
_C.MODEL.MULTITASK.TEXTURE_PHASE_BASE_LR = 0.01  # SOLVER.BASE_LR of the texture phase

# ---------------------------------------------------------------------------- #
# Instance branch of Panoptic FPN (torchvision's RPN / RoIHeads); defaults are detectron2's
# Base-RCNN-FPN. Thing ids are 0..NUM_CLASSES-1 (torchvision's background is added inside).
# ---------------------------------------------------------------------------- #
_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]  # anchor sizes per RPN level
# Aspect ratios (h / w) of the anchors: one list for every level, or one list per level
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
# Anchor centres at stride * (i + OFFSET) on each level's grid (detectron2: 0.0; 0.5 = cell centres)
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

_C.MODEL.RPN = CN()
_C.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]  # pyramid levels the RPN reads
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]  # anchor IoU below the first: negative; above: positive
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image for the RPN loss
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5  # largest share of positives among the sampled anchors
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000  # proposals kept per level before NMS, training
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000  # proposals kept per level before NMS, testing
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000  # proposals kept per image after NMS, training
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000  # proposals kept per image after NMS, testing
_C.MODEL.RPN.NMS_THRESH = 0.7  # IoU threshold of the proposal NMS
_C.MODEL.RPN.SCORE_THRESH = 0.0  # proposals with a lower objectness probability are dropped
# Box regression loss: smooth L1 with this beta, 0 = L1 (detectron2: 0; torchvision: 1/9)
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80  # thing classes (= len(metadata.thing_classes))
_C.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]  # levels RoIs are pooled from
_C.MODEL.ROI_HEADS.IOU_THRESHOLD = 0.5  # proposal IoU with a ground-truth box to be foreground
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # RoIs sampled per image for the box / mask losses
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25  # largest share of foreground among sampled RoIs
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05  # detections with a lower class score are dropped
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5  # per-class NMS IoU threshold at test time
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE = 100  # detections kept per image at test time

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2  # fully connected layers of the box head
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024  # their width
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7  # RoIAlign output size of the box head
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # RoIAlign samples per bin (0 = adaptive)
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = [10.0, 10.0, 5.0, 5.0]  # (wx, wy, ww, wh) box coding
# Box regression loss: smooth L1 with this beta, 0 = L1 (detectron2: 0; torchvision: 1/9)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
# RoI pooling: "ROIAlignV2" (aligned, half-pixel shift: detectron2) or "ROIAlign" (torchvision's)
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4  # 3x3 convs of the mask head
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256  # their channels
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14  # RoIAlign output size (masks come out at 2x)
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0  # RoIAlign samples per bin (0 = adaptive)
# RoI pooling of the mask head and of its training targets: "ROIAlignV2" (detectron2: targets cut
# with aligned RoIAlign and binarised at 0.5) or "ROIAlign" (torchvision: unaligned, soft targets)
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"
# The mask head runs on its RoIs padded with empty ones to a multiple of this (1 = none; 0 = 32 on
# a CUDA device, none elsewhere): the same outputs, and cuDNN meets a few batch sizes instead of a
# new one at almost every step (it builds its plans per shape)
_C.MODEL.ROI_MASK_HEAD.PAD_ROIS_TO_MULTIPLE = 0

# Panoptic FPN: RPN losses + RoI-head losses x INSTANCE_LOSS_WEIGHT + semantic loss x
# SEM_SEG_HEAD.LOSS_WEIGHT (detectron2)
_C.MODEL.PANOPTIC_FPN = CN()
_C.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = 1.0  # weight of the box / mask (not RPN) losses
_C.MODEL.PANOPTIC_FPN.COMBINE = CN()
_C.MODEL.PANOPTIC_FPN.COMBINE.ENABLED = True  # merge instances and stuff into panoptic_seg
_C.MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH = 0.5  # skip an instance this much already taken
_C.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 4096  # drop stuff regions smaller than this (px)
_C.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.5  # instances below: not merged

# ---------------------------------------------------------------------------- #
# Input pipeline
# ---------------------------------------------------------------------------- #
_C.INPUT = CN()
_C.INPUT.FORMAT = "RGB"  # channel order of model inputs: "RGB" or "BGR"
_C.INPUT.DATASET_MAPPER_NAME = "sem_seg"  # name in MAPPER_REGISTRY used for train and test
# Training resize. "ratio_range": scale the image to fit RESIZE_SCALE (long, short) times a ratio
# drawn from RATIO_RANGE (mmseg). "choice": short side drawn from MIN_SIZE_TRAIN, long side capped
# at MAX_SIZE_TRAIN (detectron2). "none": keep the size.
_C.INPUT.RESIZE_TYPE = "ratio_range"
_C.INPUT.RESIZE_SCALE = [2048, 512]  # (long side, short side) of the base scale for "ratio_range"
_C.INPUT.RATIO_RANGE = [0.5, 2.0]  # ratio range for "ratio_range"
_C.INPUT.MIN_SIZE_TRAIN = [512]  # short-side choices for "choice"
_C.INPUT.MAX_SIZE_TRAIN = 2048  # long-side cap for "choice"
_C.INPUT.MIN_SIZE_TEST = 512  # test-time short side (0 = keep the image size)
_C.INPUT.MAX_SIZE_TEST = 2048  # test-time cap on the long side
# How images are resized (train and test): "bilinear" (torchvision, antialiased, on tensors) or
# "pil_bilinear" (PIL's bilinear on uint8, as detectron2 does; for its converted checkpoints) or
# "cv2_bilinear" (cv2.resize INTER_LINEAR on uint8, as mmcv's imresize; for mmseg's checkpoints)
_C.INPUT.INTERPOLATION = "bilinear"
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = True  # random crop after the resize
_C.INPUT.CROP.SIZE = [512, 512]  # crop (height, width) in pixels
# Re-draw the crop (up to 10 times) while one category covers more than this fraction of it
_C.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal", "vertical" or "none"
_C.INPUT.COLOR_AUG_SSD = True  # SSD-style photometric distortion (brightness, contrast, ...)
# Pad training images to this multiple (ignore label in the labels); -1 pads to INPUT.CROP.SIZE
_C.INPUT.SIZE_DIVISIBILITY = -1

# ---------------------------------------------------------------------------- #
# Data
# ---------------------------------------------------------------------------- #
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ("synthetic_scenes_sem_seg_train",)  # names in DatasetCatalog to train on
_C.DATASETS.TEST = ("synthetic_scenes_sem_seg_val",)  # names in DatasetCatalog to evaluate on
# Check the files of DATASETS.TRAIN and DATASETS.TEST before training (data.check, what
# tools/check_dataset.py runs) and stop with the problems found: 0 = off, N = N images of each
# dataset (the same N every run), -1 = all images. Annotation files are always checked whole.
_C.DATASETS.CHECK_ON_START = 0
# Dataset declaration files (YAML / JSON; paths relative to the working directory) registered at
# set-up, each split as <name>_<split>, so DATASETS.TRAIN / TEST can name one's own data:
# ("my_data.yaml",). Format and checks: uper_parsing/data/datasets/declared.py
_C.DATASETS.REGISTER = ()

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # loader worker processes per GPU (0 = load in the main process)
# Training batches in page-locked memory when CUDA is present, so that copying them to the GPU
# overlaps the step (a pinning thread copies each batch once more on the host)
_C.DATALOADER.PIN_MEMORY = True
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch images of the same orientation together
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"  # infinite shuffled sampler, sharded by rank
_C.DATALOADER.CHECK_LABELS = True  # validate label values / sizes in the mapper (clear errors)
# Training only: a sample whose files cannot be read (missing, truncated, failing the label
# checks) is logged by file name and replaced by the next one of its group, so batches keep their
# size and the data stay a function of the seed; the count is logged at the end of training.
# False: the error stops training, naming the file. Evaluation always stops.
_C.DATALOADER.SKIP_BAD_SAMPLES = False

# ---------------------------------------------------------------------------- #
# Solver
# ---------------------------------------------------------------------------- #
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "SGD"  # "SGD" or "AdamW"
_C.SOLVER.BASE_LR = 0.01  # learning rate at the end of warmup
_C.SOLVER.BASE_LR_END = 0.0  # learning rate the poly / cosine schedules decay to
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.NESTEROV = False  # SGD Nesterov momentum
_C.SOLVER.BETAS = [0.9, 0.999]  # AdamW betas
_C.SOLVER.WEIGHT_DECAY = 0.0005  # weight decay of conv / linear weights
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of norm-layer parameters
# Weight decay of biases; None = SOLVER.WEIGHT_DECAY (detectron2's default)
_C.SOLVER.WEIGHT_DECAY_BIAS = None
_C.SOLVER.BACKBONE_MULTIPLIER = 1.0  # learning-rate factor of backbone parameters
# Weight decay by parameter name, mmengine's paramwise custom_keys: entries "substring=value"; a
# parameter whose full name (e.g. "backbone.layers.0.blocks.0.norm1.weight") contains the substring
# gets that weight decay, over every other rule; the longest matching substring wins (ties:
# alphabetical first, as mmengine sorts its keys). [] = none
_C.SOLVER.WEIGHT_DECAY_OVERRIDES = []
# Learning rate decaying with depth, mmseg's LearningRateDecayOptimizerConstructor: a parameter
# with layer id i gets BASE_LR * RATE ** (NUM_LAYERS + 1 - i) (heads and output norms: id
# NUM_LAYERS + 1, so BASE_LR); ids per backbone family (ConvNeXt). With it, weight decay follows
# that constructor: SOLVER.WEIGHT_DECAY for weights of two or more dims, 0 for 1-D parameters,
# biases and position embeddings (so WEIGHT_DECAY_NORM and WEIGHT_DECAY_BIAS must be 0.0)
_C.SOLVER.LAYER_DECAY = CN()
_C.SOLVER.LAYER_DECAY.ENABLED = False  # per-depth learning rates (mmseg's paramwise_cfg)
_C.SOLVER.LAYER_DECAY.RATE = 0.9  # lr factor per layer id (mmseg's decay_rate)
# mmseg's decay_type: "stage_wise" (stem and downsamplings id 0, blocks of stage s id s + 1) or
# "layer_wise" (mmseg's get_layer_id_for_convnext: ids grow every 3 blocks inside stage 2)
_C.SOLVER.LAYER_DECAY.TYPE = "stage_wise"
_C.SOLVER.LAYER_DECAY.NUM_LAYERS = 6  # mmseg's num_layers (its ConvNeXt-T recipe 6, S/B/L/XL 12)
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"  # or "WarmupCosineLR", "WarmupMultiStepLR"
_C.SOLVER.POLY_LR_POWER = 0.9  # exponent of the poly schedule
_C.SOLVER.STEPS = (30000,)  # iterations where WarmupMultiStepLR multiplies the lr by GAMMA
_C.SOLVER.GAMMA = 0.1  # step factor of WarmupMultiStepLR
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000  # lr factor at iteration 0 of the warmup
_C.SOLVER.WARMUP_ITERS = 0  # warmup length in iterations
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
# How warmup and schedule combine. "detectron2": the schedule spans MAX_ITER, the warmup rises to
# its value at WARMUP_ITERS. "mmengine": mmseg's param_scheduler chain, LinearLR over iterations
# [0, WARMUP_ITERS) reaching BASE_LR at WARMUP_ITERS - 1, then PolyLR over [WARMUP_ITERS,
# MAX_ITER) reaching BASE_LR_END at the last iteration (WarmupPolyLR with linear warmup only)
_C.SOLVER.SCHEDULE_STYLE = "detectron2"
_C.SOLVER.MAX_ITER = 160000  # training length in iterations
_C.SOLVER.IMS_PER_BATCH = 16  # images per iteration summed over all GPUs
_C.SOLVER.CHECKPOINT_PERIOD = 16000  # save a checkpoint every this many iterations
# keep only the newest N periodic checkpoints (model_XXXXXXX.pth) in OUTPUT_DIR, deleting older
# ones after each save (model_final.pth and the one last_checkpoint names stay); 0 keeps all
_C.SOLVER.CHECKPOINT_KEEP = 0
# Iterations between reads of the losses to the host (one device sync for the whole period):
# they are then checked (a non-finite loss raises, before anything is saved), logged and written;
# with several processes a stop request is agreed at such a read. 1 = every iteration (detectron2,
# whose writers log every 20). docs/ARCHITECTURE.md, "Training loop".
_C.SOLVER.LOG_PERIOD = 20
# Run the SGD / AdamW update as torch's fused kernels (``fused=True``) on CUDA and the CPU, except
# under float16 AMP (solver/build.py says why); False, and on other devices: torch's default
# implementation. The same update to rounding, in fewer kernel launches / passes over memory.
_C.SOLVER.FUSED = True
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip gradients before the optimizer step
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"  # "norm" (whole model) or "value" (per element)
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # max norm or max absolute value
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the p-norm for "norm"
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # automatic mixed precision on CUDA
_C.SOLVER.AMP.DTYPE = "float16"  # "float16" (with a grad scaler) or "bfloat16"

# ---------------------------------------------------------------------------- #
# DistributedDataParallel, with several processes (the options of detectron2's create_ddp_model
# and torch's DDP; the defaults are theirs)
# ---------------------------------------------------------------------------- #
_C.DDP = CN()
# gradients are all-reduced per bucket of this many MiB, as the backward pass fills them
_C.DDP.BUCKET_CAP_MB = 25
# gradients live in the all-reduce buckets: no copy into or out of them, less memory
_C.DDP.GRADIENT_AS_BUCKET_VIEW = False
# the parameters that get gradients are the same at every step, so DDP need not check each step;
# not for a model that trains different heads from batch to batch (the unified parser)
_C.DDP.STATIC_GRAPH = False
# all-reduce the gradients in float16 (half the traffic; detectron2's fp16_compression)
_C.DDP.FP16_COMPRESSION = False

# ---------------------------------------------------------------------------- #
# Test / evaluation
# ---------------------------------------------------------------------------- #
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 16000  # evaluate every this many iterations (0 = only at the end)
_C.TEST.MODE = "whole"  # "whole" image or "slide" (sliding window) inference
_C.TEST.SLIDE_CROP_SIZE = [512, 512]  # window (height, width) for "slide"
_C.TEST.SLIDE_STRIDE = [341, 341]  # window stride (height, width) for "slide"
# Pad test images (zeros) to the model's size divisibility, and slide windows to the window size
# (True); False runs each image alone at its own size and slide windows unpadded (mmseg's test)
_C.TEST.PAD_TO_DIVISIBILITY = True
_C.TEST.AUG = CN()
_C.TEST.AUG.ENABLED = False  # multi-scale + flip test-time augmentation
_C.TEST.AUG.SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]  # scale factors of the test size
_C.TEST.AUG.FLIP = True  # also run on horizontally flipped images
# Models built for inference only (train_net.py --eval-only, predictors, tools/benchmark.py
# --task inference) fold each BatchNorm into the convolution before it (layers.fold_batch_norms):
# the same outputs to rounding. "auto": on the CPU and under MODEL.COMPILE, where the convolution
# then adds its bias in the same pass; not in eager CUDA, where PyTorch adds a convolution's bias
# in a separate pass that costs more than the BatchNorm (docs/BENCHMARKS.md). "always" / "never".
# Evaluations during training never fold
_C.TEST.FOLD_BATCH_NORM = "auto"
_C.TEST.VIS_NUM_IMAGES = 4  # pictures of predictions written to OUTPUT_DIR/vis after evaluation
_C.TEST.BEST_CHECKPOINT = CN()
# After each evaluation, save OUTPUT_DIR/model_best.pth when this results key ("task/metric" as in
# metrics.json, e.g. "sem_seg/mIoU", "panoptic_seg/PQ") beats its best so far; "" = off
_C.TEST.BEST_CHECKPOINT.METRIC = ""
_C.TEST.BEST_CHECKPOINT.MODE = "max"  # "max" (larger is better: mIoU, PQ) or "min"

# ---------------------------------------------------------------------------- #
# Misc
# ---------------------------------------------------------------------------- #
_C.OUTPUT_DIR = "./output"  # where logs, checkpoints, metrics and pictures go
_C.SEED = -1  # random seed (-1 = draw one and log it)
_C.CUDNN_BENCHMARK = False  # let cudnn pick algorithms for fixed input sizes
