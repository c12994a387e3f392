"""Every --dale-* / --diffcl-* option reaches the code that uses it: an option nothing reads lets a user believe
they changed the method when they did not."""

import re
from dataclasses import fields
from pathlib import Path

from diffumamba.training.methods.settings import DaleSettings, DiffCLSettings

METHODS = Path(__file__).resolve().parents[1] / "Training" / "diffumamba" / "training" / "methods"


def test_every_method_setting_is_read_by_the_method_code():
    code = "\n".join(p.read_text() for p in METHODS.glob("*.py") if p.name != "settings.py")
    for settings in (DaleSettings, DiffCLSettings):
        for field in fields(settings):
            assert re.search(rf"\.{field.name}\b", code), f"{settings.__name__}.{field.name} is read by nothing"
