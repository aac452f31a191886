"""Which form of response_format a run's teacher is asked in (services/synthetic_datasets.py
teacher_settings): the bundled server's own, the operator's setting for the operator's teacher, and
OpenAI's (or the request's choice) for a teacher the request names; a wrong setting fails at load."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.settings import get_settings
from services.schemas.synthetic_datasets import TeacherOptions
from services.synthetic_datasets import teacher_settings
from tests.support.settings_env import settings_env

URL = "http://127.0.0.1:9/v1"


def test_each_teacher_is_asked_in_its_servers_form() -> None:
    with settings_env({"EDGETUNE_TEACHER_STRUCTURED_OUTPUT": "off"}):
        assert teacher_settings(TeacherOptions(), URL, bundled=True).structured_output == "json_object"
        assert teacher_settings(TeacherOptions(), URL).structured_output == "off"  # the operator's
        own = TeacherOptions(base_url="https://teacher.example/v1")
        assert teacher_settings(own, own.base_url or "").structured_output == "json_schema"
        chosen = TeacherOptions(base_url="https://teacher.example/v1", structured_output="json_object")
        assert teacher_settings(chosen, chosen.base_url or "").structured_output == "json_object"


def test_a_wrong_operator_setting_fails_when_the_settings_load() -> None:
    with settings_env({"EDGETUNE_TEACHER_STRUCTURED_OUTPUT": "grammar"}):
        with pytest.raises(ValidationError, match="teacher_structured_output"):
            get_settings()
