"""Experience Replay (ER) with a reservoir buffer (Chaudhry et al., 2019).

Loss = CE(stream batch) + CE(memory batch); the buffer is filled by reservoir
sampling over the stream.  All of it is the default replay step.
"""
from memdistill.methods.replay import ReplayLearner


class ExperienceReplay(ReplayLearner):
    name = "er"
