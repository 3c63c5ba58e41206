#!/usr/bin/env python
"""Run a trained model on images or a video and write pictures of its predictions.

    python demo.py --config-file configs/quickstart/upernet_R18_synthetic.yaml \
        --input path/to/images/ --output demo_out/ \
        MODEL.WEIGHTS output/quickstart/upernet_R18_synthetic/model_final.pth
    python demo.py --checkpoint output/quickstart/upernet_R18_synthetic/model_final.pth \
        --input "photos/*.jpg" --output demo_out/      # config and classes from the checkpoint
    python demo.py --checkpoint model_final.pth --video-input clip.mp4 --output demo_out/

For each image it writes ``<stem>.png`` ([image | prediction] with class names and a legend,
drawn by the model's task record) and what the record's demo writer adds: for a semantic model
``<stem>_labels.png`` (the predicted train id of each pixel); for a panoptic model
``<stem>_panoptic.png`` (segment ids as RGB, ``id = R + 256 G + 256^2 B``, 0 = void) and
``<stem>_segments.json`` (the segments, each with its ``category_name``); for a unified
perceptual parser, the picture only ([image | object | part | material] and the predicted
scene). An image that cannot be read is named, skipped and counted in the summary at the end. A
video gives ``<stem>.mp4``: the picture of every frame.

The logic lives in ``uper_parsing.cli.demo``; ``pip install .`` also installs it as the
``uper-demo`` command.
"""

import sys

from uper_parsing.cli.demo import (
    IMAGE_EXTENSIONS,
    build_predictor,
    list_images,
    main,
    parse_args,
    run_images,
    run_video,
    write_outputs,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "build_predictor",
    "list_images",
    "main",
    "parse_args",
    "run_images",
    "run_video",
    "write_outputs",
]

if __name__ == "__main__":
    sys.exit(main())
