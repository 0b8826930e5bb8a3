#!/usr/bin/env python3
"""What TensorBoard's own reader finds in a log directory, printed as one JSON object:
{"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width, height, is_png], ...]}}.

Usage: tb_read.py LOGDIR
"""
import json
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator as ea
except ImportError:
    sys.exit("tb_read.py needs TensorBoard: python3 -m pip install tensorboard (launch/install-deps.sh --test does)")

# 0: keep every event (the default keeps a sample of only 4 images per tag).
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
acc.Reload()
tags = acc.Tags()
print(json.dumps({
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags[ea.SCALARS]},
    "images": {t: [[e.step, e.width, e.height, e.encoded_image_string.startswith(b"\x89PNG\r\n\x1a\n")]
                   for e in acc.Images(t)] for t in tags[ea.IMAGES]},
}))
