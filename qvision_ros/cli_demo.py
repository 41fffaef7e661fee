"""qvision demo: the shipped detector on the shipped 10 s synthetic road clip (nothing to download).

Runs ``qvision run`` on ``qvision_ros/data/sample_road.mp4`` with the shipped model (the int8 detector when
it is installed, else the float one) and every option of ``qvision run`` except SOURCE.  The clip's ground
truth is ``qvision_ros/data/sample_road.json``: ``qvision eval --data`` that file scores any model on it.
"""
from . import cli_run


def add_arguments(p):
    cli_run.add_arguments(p, source=False)


def run(args):
    args.source = str(cli_run.SAMPLE_VIDEO)
    status = cli_run.run(args)
    print('ground truth of the clip: %s (score a model on it: qvision eval --data %s --model MODEL)'
          % (cli_run.SAMPLE_GROUND_TRUTH, cli_run.SAMPLE_GROUND_TRUTH))
    return status
