#!/usr/bin/env python3
"""Train the embedded default detector: a thin wrapper of ``python -m qvision_ros.training.train``.

Example (the defaults are the recipe of qvision_ros/data/detector_320.onnx; MODEL_CARD.md there has the
exact command):

    python scripts/train_detector.py --out runs/detector --workers 1 --time-limit 27
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qvision_ros.training.train import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
