"""Conformance cases edgerun does not pass, each with its reason, gathered from one
file per op family (so each family's list stays short and reviewable).

Keep this list honest: the conformance test fails when an excluded case starts
passing, so a case leaves the list the moment it is fixed.
"""

from tests.converters.conformance import excludes_control, excludes_math, excludes_nn, excludes_shape

EXCLUDED: dict[str, str] = {
    **excludes_math.EXCLUDED,
    **excludes_shape.EXCLUDED,
    **excludes_nn.EXCLUDED,
    **excludes_control.EXCLUDED,
}
