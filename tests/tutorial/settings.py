"""Settings of the tutorial chat: the example project's, with the channel layer and
CHANNELS_TUNING of the tutorial step in ``CT_TUTORIAL_STEP`` (tests.tutorial.steps)."""

import json
import os

from example_project.settings import *  # noqa: F403

from .steps import STEPS

STEP = STEPS[int(os.environ.get("CT_TUTORIAL_STEP", "0"))]
ROOT_URLCONF = "tests.tutorial.urls"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": STEP.layer,
        "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
    }
}
CHANNELS_TUNING = {**STEP.tuning, **json.loads(os.environ.get("CHANNELS_TUNING_JSON", "{}"))}
