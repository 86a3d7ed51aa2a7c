"""The error-code table is made by the error classes themselves: every class with a code of its
own is in it, a code names one class, and a JSON error body turns back into its class."""

from __future__ import annotations

import inspect

import pytest

from aisync.util import errors
from aisync.util.errors import ERRORS_BY_CODE, AisyncError, NotFound, error_from_dict


def test_every_error_class_with_its_own_code_is_in_the_table():
    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, AisyncError) and "code" in cls.__dict__]
    assert len(classes) > 30
    for cls in classes:
        assert ERRORS_BY_CODE[cls.code] is cls
        rebuilt = error_from_dict(cls.status, cls("m").to_dict())
        assert type(rebuilt) is cls and rebuilt.message == "m"


def test_two_classes_cannot_claim_one_code():
    with pytest.raises(TypeError, match="ObjectNotFound"):
        class Another(NotFound):  # noqa: F841
            code = "ObjectNotFound"
    assert ERRORS_BY_CODE["ObjectNotFound"] is errors.ObjectNotFound


def test_a_class_that_inherits_a_code_does_not_take_it():
    class Quieter(errors.ObjectNotFound):
        pass
    assert ERRORS_BY_CODE["ObjectNotFound"] is errors.ObjectNotFound
